"""The generated systemd unit is sandboxed and still opens what its profile needs.

For every device profile, alone and with every use-case preset: ``systemd-analyze verify``
accepts the unit, ``systemd-analyze security --offline=yes`` rates its exposure at most 4.0, and
``DeviceAllow=`` covers exactly the hardware the profile uses. Needs ``systemd-analyze``
(``apt-get install systemd``; systemd does not have to be running, ``.ci/run`` installs it).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from edgesight.edge.fleet.profiles import list_presets, list_profiles, load_preset, load_profile, resolve
from edgesight.edge.fleet.render import hardware, render_unit

MAX_EXPOSURE = 4.0
COMBOS = [(p, None) for p in list_profiles()] + [(p, u) for p in list_profiles() for u in list_presets()]

# What each kind of hardware opens, as the driver names in /proc/devices that systemd resolves
# DeviceAllow=char-NAME against on the device (the GPIO memory driver has two names by kernel).
NEEDS = {
    "camera": ["video4linux"],
    "picamera2": ["video4linux", "media", "dma_heap"],
    "gpio": ["gpiochip", "bcm2835-gpiomem", "rpi-gpiomem"],
    "coral:usb": ["usb_device"],
    "coral:pci": ["apex"],
}


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (systemd need not be running)")
    return exe


def _unit(tmp_path: Path, profile: str, preset: Optional[str]) -> Tuple[str, Path]:
    """The unit as installed under a prefix in tmp_path, with a stub at its ExecStart path (so
    that ``verify`` finds an executable), written as ``edgesight.service``."""
    resolved = resolve(load_profile(profile), load_preset(preset) if preset else None)
    text = render_unit(resolved, str(tmp_path / "opt" / "edgesight"), "edgesight")
    exe = Path(_values(text, "ExecStart")[0].split()[0])
    assert tmp_path in exe.parents, exe
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    path = tmp_path / "unit" / "edgesight.service"
    path.parent.mkdir()
    path.write_text(text)
    return text, path


def _values(unit: str, key: str) -> List[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def _exposure(analyze: str, path: Path) -> float:
    out = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out.stdout)
    assert m, out.stdout
    return float(m.group(1))


@pytest.mark.parametrize("profile, preset", COMBOS, ids=[p + (f"+{u}" if u else "") for p, u in COMBOS])
def test_unit_verifies_and_scores_at_most_4(tmp_path, profile, preset):
    analyze = _analyze()
    _, path = _unit(tmp_path, profile, preset)
    verify = subprocess.run([analyze, "verify", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=60, cwd=tmp_path)
    # verify exits 0 even on unknown keys or bad values: every line about the unit is a finding.
    findings = [line for line in verify.stdout.splitlines() if "edgesight.service" in line]
    assert verify.returncode == 0 and not findings, verify.stdout
    exposure = _exposure(analyze, path)
    assert exposure <= MAX_EXPOSURE, f"{profile} {preset or ''}: exposure {exposure} > {MAX_EXPOSURE}"


@pytest.mark.parametrize("profile, preset", COMBOS, ids=[p + (f"+{u}" if u else "") for p, u in COMBOS])
def test_unit_allows_the_devices_the_profile_needs_and_no_others(tmp_path, profile, preset):
    unit, _ = _unit(tmp_path, profile, preset)
    resolved = resolve(load_profile(profile), load_preset(preset) if preset else None)
    rs = resolved.runtime
    # PrivateDevices=yes would hide the camera; a closed policy with an allow list replaces it.
    assert _values(unit, "DevicePolicy") == ["closed"] and "PrivateDevices=yes" not in unit.splitlines()
    allowed = [v.split()[0] for v in _values(unit, "DeviceAllow")]
    assert all(v.startswith("char-") and v.endswith(" rw") for v in _values(unit, "DeviceAllow")), allowed

    expected = {"camera" if rs.source.isdigit() or rs.source.startswith("/dev/") else "picamera2"}
    assert rs.source.isdigit() or rs.source.startswith(("/dev/", "picamera2")), "every built-in profile has a camera"
    if rs.device.startswith("coral"):
        expected.add("coral:" + rs.device.split(":")[1])
    if preset == "qc-line":
        expected.add("gpio")
    assert set(hardware(resolved)) == expected

    def allows(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern[len("char-"):]) for pattern in allowed)

    needed = {name for kind in expected for name in NEEDS[kind]}
    for name in {name for names in NEEDS.values() for name in names}:
        assert allows(name) == (name in needed), f"{profile} {preset or ''}: char-{name} allowed: {allows(name)}"

    families = _values(unit, "RestrictAddressFamilies")[0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert ("AF_NETLINK" in families) == bool(expected & {"picamera2", "coral:usb", "coral:pci"})
    assert "User=root" not in unit.splitlines() and _values(unit, "CapabilityBoundingSet") == [""]


@pytest.mark.parametrize("source, device, gpio, kinds", [
    ("rtsp://cam.local/stream", "cpu", None, []),
    ("shots/*.jpg", "cpu", None, []),
    ("synthetic:320x240@15", "coral", None, ["coral:usb", "coral:pci"]),
    ("/dev/video2", "coral:pci:1", "27", ["camera", "coral:pci", "gpio"]),
    ("PiCamera2:640x480", "coral:usb:0", None, ["picamera2", "coral:usb"]),
])
def test_hardware_follows_the_run_settings(tmp_path, source, device, gpio, kinds):
    base = resolve(load_profile("generic-linux"))
    resolved = replace(base, runtime=replace(base.runtime, source=source, device=device, gpio=gpio))
    assert hardware(resolved) == kinds
    unit = render_unit(resolved, "/opt/edgesight", "edgesight")
    if not kinds:
        assert not _values(unit, "DeviceAllow") and _values(unit, "DevicePolicy") == ["closed"]
    path = tmp_path / "edgesight.service"
    path.write_text(unit)
    assert _exposure(_analyze(), path) <= MAX_EXPOSURE


def test_the_sandbox_keeps_what_the_runtime_needs():
    unit = render_unit(resolve(load_profile("rpi5"), load_preset("qc-line")), "/opt/edgesight", "edgesight").splitlines()
    # Writable state directory under a read-only system; the release stays readable.
    assert {"ProtectSystem=strict", "StateDirectory=edgesight", "WorkingDirectory=/var/lib/edgesight"} <= set(unit)
    # LiteRT's cpuinfo parses /proc/cpuinfo and gpiozero reads /proc/device-tree: no ProcSubset=pid.
    assert not any(line.startswith("ProcSubset=") for line in unit)
    # sd_notify and the watchdog are unchanged by the sandbox.
    assert {"Type=notify", "NotifyAccess=main"} <= set(unit)
