"""The ``edgesight run`` options of a device profile: ``RunSettings``, its checks and its arguments.

Every field of ``RunSettings`` is the ``edgesight run`` option of the same name (``top_k`` is
``--top-k``), so a profile can only say what the runtime can do. ``_check_runtime`` refuses values
the runtime would refuse, ``frame_size`` reads the capture size the settings ask for, and
``run_args`` turns resolved settings into the argument list that ``run.args`` and the systemd
unit carry to the device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, ProfileError

if TYPE_CHECKING:
    from .settings import ResolvedProfile

# Field metadata: a YAML integer is accepted and kept as text (camera index 0, GPIO pin 17, port 8080).
_INT_OK = {"int_ok": True}

DEVICE_RE = re.compile(r"cpu|coral(:(usb|pci)(:\d+)?)?")


@dataclass(frozen=True)
class RunSettings:
    """Options of ``edgesight run``; each field is the flag of the same name, ``None`` its default.

    Attributes:
        source: ``--source``: camera index, ``/dev/videoN``, ``picamera2[:WxH]``, a stream URL...
        device: ``--device``: ``cpu``, ``coral``, ``coral:usb`` or ``coral:pci``.
        threads, width, height, fps: interpreter threads and the requested capture format.
        roi: ``x,y,w,h`` window classified instead of the whole frame.
        threshold, smooth, hysteresis, top_k: decision settings (see ``edgesight run --help``).
        headless, quiet: no window; no per-change console lines.
        jsonl, on_change_only, http, mqtt, mqtt_qos, mqtt_retain: outputs.
        gpio, gpio_on, gpio_pulse_ms: pulse a pin when one of the ``gpio_on`` labels is reported.
        stats_json, stats_interval: statistics file and interval.
        status_file: JSON file rewritten with the live statistics every interval (health checks).
    """

    source: Optional[str] = field(default=None, metadata=_INT_OK)
    device: Optional[str] = None
    threads: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    roi: Optional[str] = None
    threshold: Optional[float] = None
    smooth: Optional[int] = None
    hysteresis: Optional[float] = None
    top_k: Optional[int] = None
    headless: Optional[bool] = None
    quiet: Optional[bool] = None
    jsonl: Optional[str] = None
    on_change_only: Optional[bool] = None
    http: Optional[str] = field(default=None, metadata=_INT_OK)
    mqtt: Optional[str] = None
    mqtt_qos: Optional[int] = None
    mqtt_retain: Optional[bool] = None
    gpio: Optional[str] = field(default=None, metadata=_INT_OK)
    gpio_on: Optional[Tuple[str, ...]] = None
    gpio_pulse_ms: Optional[float] = None
    stats_json: Optional[str] = None
    stats_interval: Optional[float] = None
    status_file: Optional[str] = None

    def merged(self, over: "RunSettings") -> "RunSettings":
        """These settings with every value that ``over`` sets replacing ours."""
        return replace(self, **{f.name: getattr(over, f.name) for f in fields(over) if getattr(over, f.name) is not None})

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


def _plain(value: Any) -> Any:
    """Tuples -> lists and dicts copied, for YAML and JSON."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_runtime(rs: RunSettings, where: str, key: str = "runtime") -> None:
    """Refuse values ``edgesight run`` would refuse; the error names ``where`` and ``key.<field>``."""

    def bad(name: str, message: str) -> ProfileError:
        return ProfileError(f"{where}: {key}.{name}: {message}")

    for f in fields(rs):
        value = getattr(rs, f.name)
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            # One run argument per line in run.args, one word per argument in ExecStart.
            if isinstance(text, str) and (not text.strip() or any(ord(c) < 32 for c in text)):
                raise bad(f.name, f"{text!r} must be non-empty text on one line")
    if rs.device is not None and not DEVICE_RE.fullmatch(rs.device):
        raise bad("device", f"'{rs.device}' is not cpu, coral, coral:usb or coral:pci")
    for name in ("threads", "width", "height", "smooth", "top_k"):
        value = getattr(rs, name)
        if value is not None and value < 1:
            raise bad(name, f"{value} must be at least 1")
    for name in ("fps", "gpio_pulse_ms"):
        value = getattr(rs, name)
        if value is not None and value <= 0:
            raise bad(name, f"{value} must be positive")
    if rs.stats_interval is not None and rs.stats_interval < 0:
        raise bad("stats_interval", f"{rs.stats_interval} cannot be negative (0: no statistics lines)")
    if rs.threshold is not None and not 0.0 <= rs.threshold <= 1.0:
        raise bad("threshold", f"{rs.threshold} must be a probability between 0 and 1")
    if rs.hysteresis is not None and not 0.0 <= rs.hysteresis < 1.0:
        raise bad("hysteresis", f"{rs.hysteresis} must be in [0, 1)")
    if rs.mqtt_qos is not None and rs.mqtt_qos not in (0, 1, 2):
        raise bad("mqtt_qos", f"{rs.mqtt_qos} must be 0, 1 or 2")
    if rs.roi is not None:
        _parse_roi(rs.roi, where, key)
    if rs.mqtt is not None:
        from ..sinks import parse_mqtt_url

        try:
            parse_mqtt_url(rs.mqtt)
        except ConfigError as e:
            raise bad("mqtt", str(e)) from e


def _parse_roi(text: str, where: str, key: str) -> Tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ProfileError(f"{where}: {key}.roi: '{text}' is not x,y,w,h in pixels, e.g. 100,80,400,400") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ProfileError(f"{where}: {key}.roi: '{text}': width and height must be positive, x and y not negative")
    return x, y, w, h


def frame_size(rs: RunSettings) -> Optional[Tuple[int, int]]:
    """(width, height) of the frames the source delivers, when the settings say.

    A size in the source (``picamera2:640x480``) wins over ``width``/``height``, as in
    ``edgesight run``.
    """
    if rs.source:
        m = re.fullmatch(r"(?:picamera2|synthetic):(\d+)x(\d+)(?:@[\d.]+)?", rs.source.strip(), re.IGNORECASE)
        if m:
            return int(m.group(1)), int(m.group(2))
    if rs.width and rs.height:
        return rs.width, rs.height
    return None


def _arg(value: Any) -> str:
    """One value as a command-line word: whole floats without ``.0`` (``--fps 30``)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def run_args(resolved: ResolvedProfile) -> List[str]:
    """The ``edgesight run`` arguments (after the bundle path) for these settings.

    Each set field becomes its flag: ``top_k: 1`` -> ``--top-k 1``, ``headless: true`` ->
    ``--headless`` (false: omitted, the run default), a list repeats the flag.

    Args:
        resolved: the resolved profile.

    Returns:
        The arguments, in the field order of ``RunSettings``.
    """
    args: List[str] = []
    for f in fields(RunSettings):
        value = getattr(resolved.runtime, f.name)
        flag = "--" + f.name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                args += [flag, _arg(item)]
        else:
            args += [flag, _arg(value)]
    if resolved.review is not None:
        rv = resolved.review
        args += ["--review-dir", rv.dir]
        for label in rv.labels:
            args += ["--review-label", label]
        args += ["--review-max-mb", _arg(rv.max_mb)]
    return args
