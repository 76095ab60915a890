"""``edgesight doctor``: what this machine can run, and the command that installs what is missing.

Every probe reads files or imports modules; none needs root, and hardware probes take a
filesystem ``root`` so tests can point them at a fake ``/sys`` and ``/dev`` tree.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (not yet initialised)", ("18d1", "9302"): "Coral USB Accelerator"}


@dataclass
class Check:
    """One line of the report: ``ok`` None means informational."""

    name: str
    ok: Optional[bool]
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: List[Check] = field(default_factory=list)
    can_run: Optional[bool] = None

    def add(self, name: str, ok: Optional[bool], detail: str, fix: str = "") -> Check:
        c = Check(name, ok, detail, fix)
        self.checks.append(c)
        return c

    def to_dict(self) -> Dict[str, Any]:
        return {"checks": [asdict(c) for c in self.checks], "can_run": self.can_run}

    def format(self) -> str:
        mark = {True: "ok  ", False: "MISS", None: "info"}
        width = max(len(c.name) for c in self.checks)
        lines = []
        for c in self.checks:
            lines.append(f"[{mark[c.ok]}] {c.name:<{width}}  {c.detail}")
            if c.fix and c.ok is not True:
                # an optional piece (no Edge TPU attached yet) still says how to add it
                lines.append(f"       {'':<{width}}  {'fix' if c.ok is False else 'to add'}: {c.fix}")
        if self.can_run is not None:
            lines.append("this machine can run the bundle" if self.can_run else "this machine cannot run the bundle (see above)")
        return "\n".join(lines)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def cpu_model(root: Path = Path("/")) -> str:
    text = _read(root / "proc/cpuinfo")
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def raspberry_pi_model(root: Path = Path("/")) -> str:
    return _read(root / "proc/device-tree/model").rstrip("\x00")


def video_devices(root: Path = Path("/")) -> List[str]:
    dev = root / "dev"
    try:
        return sorted(str(Path("/dev") / p.name) for p in dev.iterdir() if p.name.startswith("video"))
    except OSError:
        return []


def coral_devices(root: Path = Path("/")) -> List[str]:
    """Coral accelerators: USB (by vendor:product id in sysfs) and PCIe/M.2 (``/dev/apex_N``)."""
    found = []
    usb = root / "sys/bus/usb/devices"
    try:
        entries = sorted(usb.iterdir())
    except OSError:
        entries = []
    for d in entries:
        ids = (_read(d / "idVendor").lower(), _read(d / "idProduct").lower())
        if ids in CORAL_USB_IDS:
            found.append(f"{CORAL_USB_IDS[ids]} (usb {d.name}, {ids[0]}:{ids[1]})")
    try:
        found += sorted(f"Coral PCIe/M.2 Edge TPU ({Path('/dev') / p.name})" for p in (root / "dev").iterdir() if p.name.startswith("apex_"))
    except OSError:
        pass
    return found


def _version(module: str) -> Optional[str]:
    try:
        mod = importlib.import_module(module)
    except Exception:  # a broken install raises more than ImportError; the report says it is missing
        return None
    return str(getattr(mod, "__version__", "installed"))


def run_checks(bundle: Optional[Path] = None, root: Path = Path("/"), disk_path: Path = Path(".")) -> Report:
    """Probe this machine; with ``bundle``, also whether it can run that bundle."""
    import cv2
    import numpy as np

    from ..model.interpreter import EDGETPU_INSTALL, edgetpu_delegate, probe_backends

    r = Report()
    pi = raspberry_pi_model(root)
    r.add("platform", None, f"{platform.system()} {platform.release()} {platform.machine()}" + (f", {pi}" if pi else ""))
    r.add("cpu", None, f"{cpu_model(root)}, {os.cpu_count()} cores")
    r.add("python", None, f"{platform.python_version()}, numpy {np.__version__}")
    from ..sinks.display import opencv_gui

    gui = opencv_gui() != "NONE"
    r.add("opencv", True, f"{cv2.__version__} ({'with' if gui else 'without'} window support)")
    if not gui:
        r.add("display window", None, "--display unavailable (headless OpenCV); --http works everywhere",
              "pip uninstall -y opencv-python-headless && pip install opencv-python")
    loaded = None
    for name, b, why in probe_backends():
        if b is None:
            r.add(f"backend {name}", None, f"not available ({why[:120]})")
            continue
        r.add(f"backend {name}", True, f"{b.version}" + (" (in use)" if loaded is None else ""))
        loaded = loaded or b
    if loaded is None:
        r.add("LiteRT runtime", False, "no interpreter could be imported", "pip install ai-edge-litert")
    cams = video_devices(root)
    r.add("V4L2 cameras", bool(cams) if cams else None, ", ".join(cams) if cams else "none found (USB cameras appear as /dev/videoN)")
    pc = _version("picamera2")
    if pi or pc:
        r.add("picamera2", pc is not None, pc or "not importable",
              "sudo apt install -y python3-picamera2 and make the venv with --system-site-packages")
        libcam = shutil.which("rpicam-hello") or shutil.which("libcamera-hello")
        r.add("libcamera apps", bool(libcam) or None, libcam or "rpicam-hello not found", "sudo apt install -y rpicam-apps")
    tpus = coral_devices(root)
    r.add("Edge TPU devices", bool(tpus) if tpus else None, "; ".join(tpus) if tpus else "none found")
    delegate_ok: Optional[bool] = None
    if loaded is not None:
        try:
            edgetpu_delegate(loaded)
            delegate_ok = True
            r.add("Edge TPU delegate", True, "libedgetpu loads")
        except Exception as e:  # missing library or device: reported, not fatal
            delegate_ok = False
            reason = str(e).split(" could not be loaded (", 1)[-1].split("); ", 1)[0]
            r.add("Edge TPU delegate", None if not tpus else False, f"not loadable ({reason[:100]})", EDGETPU_INSTALL)
    throttled = _vcgencmd("get_throttled")
    if throttled:
        bad = throttled.split("=")[-1] not in ("0x0", "0")
        r.add("throttling", not bad, throttled + (" (under-voltage or thermal throttling seen)" if bad else ""), "use the official power supply and a heatsink or fan")
    temp = _read(root / "sys/class/thermal/thermal_zone0/temp")
    if temp.isdigit():
        r.add("temperature", int(temp) < 80000, f"{int(temp) / 1000:.1f} °C", "improve cooling: the SoC throttles at 80-85 °C")
    usage = shutil.disk_usage(disk_path)
    free_mb = usage.free / 2**20
    r.add("free disk", free_mb > 200, f"{free_mb:,.0f} MiB free on {disk_path.resolve()}", "free some space: models, videos and logs need room")
    if bundle is not None:
        r.can_run = _check_bundle(r, bundle, loaded, delegate_ok)
    return r


def _vcgencmd(arg: str) -> str:
    exe = shutil.which("vcgencmd")
    if not exe:
        return ""
    try:
        return subprocess.run([exe, arg], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _check_bundle(r: Report, bundle: Path, backend, delegate_ok: Optional[bool]) -> bool:
    from ..model.bundle import check_model_json, load_bundle
    from ..errors import EdgesightError
    from ..model.interpreter import TFLiteClassifier

    try:
        b = load_bundle(bundle)
    except EdgesightError as e:
        r.add("bundle", False, str(e))
        return False
    r.add("bundle", True, f"{b.model_path} ({len(b.info.labels)} classes, input {b.info.preprocess.width}x{b.info.preprocess.height})")
    if backend is None:
        return False
    compiled = (b.root / "model_edgetpu.tflite").is_file() if b.root.is_dir() else False
    try:
        clf = TFLiteClassifier(b.model_path, backend=backend, outputs=b.info.extra.get("outputs"))
        check_model_json(b, clf)
        clf.invoke()
        r.add("bundle loads", True, f"{clf.input.dtype.name} input {list(clf.input.shape)} runs on {backend.name}")
    except EdgesightError as e:
        r.add("bundle loads", False, str(e))
        return False
    if compiled:
        r.add("Edge TPU model", bool(delegate_ok) or None, "model_edgetpu.tflite present" + ("" if delegate_ok else "; without the delegate the CPU model runs instead"))
    return True
