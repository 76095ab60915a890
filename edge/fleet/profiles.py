"""Device profiles and use-case presets: how ``edgesight run`` is set up on a given device.

A device profile (``firmware_configs/<name>.yaml``) holds what a board needs: the runtime
settings (camera source, capture size and rate, interpreter threads, CPU or Edge TPU) and the
OS side (a boot-config fragment for the camera, udev rules, apt packages, pinned Python
requirements, systemd service settings). A use-case preset (``firmware_configs/presets/``) layers
an application on top: smoothing, a region of interest, MQTT, a GPIO reject gate, and the
recommended ``edgesight train`` options. ``resolve`` merges the two; ``run_args`` and
``render_unit`` turn the result into ``edgesight run`` arguments and a systemd unit.

Every runtime key is the ``edgesight run`` option of the same name (``top_k`` is ``--top-k``), so
a profile can only say what the runtime can do. Files are checked strictly: an unknown key or a
wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from string import Template
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from .. import __version__
from ..errors import ConfigError, ProfileError

Scalar = Union[str, int, float, bool]

# Field metadata: a YAML integer is accepted and kept as text (camera index 0, GPIO pin 17, port 8080).
_INT_OK = {"int_ok": True}

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
DEVICE_RE = re.compile(r"cpu|coral(:(usb|pci)(:\d+)?)?")
# name==version, optionally with extras and an environment marker: the device installs exactly this.
PINNED_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?===?[A-Za-z0-9.+!*_-]+(\s*;\s*\S.*)?")
UDEV_NAME_RE = re.compile(r"[0-9]{2}-[A-Za-z0-9._-]+\.rules")
GROUP_RE = re.compile(r"[a-z_][a-z0-9_-]*")


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


@dataclass(frozen=True)
class OsSettings:
    """The operating-system side of a device.

    Attributes:
        boot_config: a fragment for the boot configuration (Raspberry Pi ``config.txt``), or None.
        boot_config_path: where that fragment belongs.
        udev_rules: file name (``NN-name.rules``) -> rules text, installed in ``/etc/udev/rules.d``.
        apt: Debian packages the device needs.
        requirements: pinned Python requirements besides edgesight itself (``name==version``,
            optionally with an environment marker).
        system_site_packages: create the venv with ``--system-site-packages`` (picamera2 and
            libcamera come from apt on Raspberry Pi OS).
    """

    boot_config: Optional[str] = None
    boot_config_path: str = "/boot/firmware/config.txt"
    udev_rules: Dict[str, str] = field(default_factory=dict)
    apt: Tuple[str, ...] = ()
    requirements: Tuple[str, ...] = ()
    system_site_packages: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ServiceSettings:
    """The systemd service.

    Attributes:
        groups: supplementary groups of the service user (``video`` for cameras, ``gpio``...).
        restart_sec: pause before a restart after a failure.
        watchdog_sec: restart when the runtime has not fed the watchdog for this long.
        timeout_start_sec: time allowed to load the model and open the camera.
    """

    groups: Tuple[str, ...] = ("video",)
    restart_sec: float = 5.0
    watchdog_sec: float = 30.0
    timeout_start_sec: float = 120.0

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ReviewSettings:
    """Frames kept for a person to review (the rejects of an inspection line).

    Becomes ``edgesight run --review-dir DIR --review-label L ... --review-max-mb N``.

    Attributes:
        dir: folder for the saved frames (relative: in the service's state directory).
        labels: frames with these labels are saved.
        max_mb: the oldest frames are deleted beyond this size.
    """

    dir: str
    labels: Tuple[str, ...]
    max_mb: int = 512

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DeviceProfile:
    """A device: its runtime settings and its OS side (``firmware_configs/<name>.yaml``)."""

    name: str
    description: str
    arch: str = "any"
    runtime: RunSettings = field(default_factory=RunSettings)
    os: OsSettings = field(default_factory=OsSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class UseCasePreset:
    """An application layered on a device profile (``firmware_configs/presets/<name>.yaml``).

    Attributes:
        runtime: run settings that replace the profile's.
        extras: edgesight extras the use case needs (``gpio``), added to the pinned requirement.
        apt, requirements: added to the profile's.
        review: frames saved for review, if the use case keeps them.
        train: recommended ``edgesight train`` options (``hflip: false`` is ``--no-hflip``).
    """

    name: str
    description: str
    runtime: RunSettings = field(default_factory=RunSettings)
    extras: Tuple[str, ...] = ()
    apt: Tuple[str, ...] = ()
    requirements: Tuple[str, ...] = ()
    review: Optional[ReviewSettings] = None
    train: Dict[str, Scalar] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its preset applied: everything a deployment needs.

    ``os.requirements`` is the complete pinned list, ``edgesight==<version>`` first.
    """

    profile: str
    description: str
    arch: str
    runtime: RunSettings
    os: OsSettings
    service: ServiceSettings
    use_case: Optional[str] = None
    use_case_description: Optional[str] = None
    review: Optional[ReviewSettings] = None
    train: Dict[str, Scalar] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """``profile`` or ``profile + use-case``."""
        return self.profile + (f" + {self.use_case}" if self.use_case else "")

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for ``profile.yaml`` and ``edgesight profiles show``."""
        d: Dict[str, Any] = {
            "format": "edgesight.profile/1",
            "toolkit_version": __version__,
            "profile": self.profile,
            "description": self.description,
            "use_case": self.use_case,
            "use_case_description": self.use_case_description,
            "arch": self.arch,
            "runtime": self.runtime.to_dict(),
            "run_args": run_args(self),
            "os": self.os.to_dict(),
            "service": self.service.to_dict(),
        }
        if self.review is not None:
            d["review"] = self.review.to_dict()
        if self.train:
            d["train"] = dict(self.train)
            d["train_args"] = train_args(self)
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


# --------------------------------------------------------------------------------------------
# Loading


def builtin_dir() -> Path:
    """The folder of the built-in profiles (``firmware_configs/``, the package
    ``edgesight.firmware_configs``)."""
    return Path(str(importlib.resources.files("edgesight.firmware_configs")))


def _presets_dir() -> Path:
    return builtin_dir() / "presets"


def list_profiles() -> List[str]:
    """Names of the built-in device profiles, sorted."""
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def list_presets() -> List[str]:
    """Names of the built-in use-case presets, sorted."""
    return sorted(p.stem for p in _presets_dir().glob("*.yaml"))


def preset_file(name: str) -> Optional[Path]:
    """The YAML file of built-in preset ``name`` (to copy and edit), or None for another name."""
    return _presets_dir() / f"{name}.yaml" if name in list_presets() else None


def builtin_template(name: str) -> str:
    """The text of a template shipped in ``firmware_configs/`` (``install.sh.in``...)."""
    return (builtin_dir() / name).read_text(encoding="utf-8")


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """Load a built-in device profile by name, or a user's profile from a YAML file.

    Args:
        name_or_path: ``rpi5``, ``coral-usb``... or the path of a YAML file (it contains a ``/``
            or ends in ``.yaml``/``.yml``).

    Returns:
        The validated profile.

    Raises:
        ProfileError: an unknown name, an unreadable file, an unknown key or a wrong value; the
            message names the file and the key.
    """
    path, where = _locate(name_or_path, builtin_dir(), "firmware_configs", "device profile", list_profiles())
    data = _read_yaml(path, where)
    data.setdefault("name", path.stem)
    profile = _build(DeviceProfile, data, where, "")
    _check_profile(profile, where)
    return profile


def load_preset(name_or_path: Union[str, Path]) -> UseCasePreset:
    """Load a built-in use-case preset by name, or a user's preset from a YAML file.

    Args:
        name_or_path: ``drone``, ``qc-line``, ``traffic-sign`` or the path of a YAML file.

    Returns:
        The validated preset.

    Raises:
        ProfileError: as for ``load_profile``.
    """
    path, where = _locate(name_or_path, _presets_dir(), "firmware_configs/presets", "use-case preset", list_presets())
    data = _read_yaml(path, where)
    data.setdefault("name", path.stem)
    preset = _build(UseCasePreset, data, where, "")
    _check_preset(preset, where)
    return preset


def _locate(name_or_path: Union[str, Path], folder: Path, shown: str, kind: str, names: List[str]) -> Tuple[Path, str]:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProfileError(f"{path}: no such {kind} file; give a YAML file or a built-in name ({', '.join(names)})")
        return path, str(path)
    if text not in names:
        raise ProfileError(f"unknown {kind} '{text}'; choose one of {', '.join(names)}, or give the path of a YAML file")
    return folder / f"{text}.yaml", f"{shown}/{text}.yaml"


def _read_yaml(path: Path, where: str) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"{where}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ProfileError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a mapping of key: value at the top level")
    return data


# --------------------------------------------------------------------------------------------
# Typed construction from YAML: unknown keys and wrong types name the file and the key.


def _build(cls: type, data: Any, where: str, key: str) -> Any:
    label = key or "top level"
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: {label}: expected a mapping of key: value, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for k in data:
        if k not in known:
            raise ProfileError(f"{where}: {_join(key, k)}: unknown key; valid keys: {', '.join(known)}")
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], where, _join(key, f.name), bool(f.metadata.get("int_ok")))
    missing = [n for n in known if n not in kwargs and _required(cls, n)]
    if missing:
        raise ProfileError(f"{where}: {_join(key, missing[0])}: missing; this key is required")
    return cls(**kwargs)


def _required(cls: type, name: str) -> bool:
    f = next(f for f in fields(cls) if f.name == name)
    return f.default is MISSING and f.default_factory is MISSING


def _convert(value: Any, tp: Any, where: str, key: str, int_ok: bool = False) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union and type(None) in args:
        if value is None:
            return None
        rest = tuple(a for a in args if a is not type(None))
        tp = rest[0] if len(rest) == 1 else Union[rest]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        raise ProfileError(f"{where}: {key}: cannot be empty")
    if is_dataclass(tp):
        return _build(tp, value, where, key)
    if tp == Scalar:
        if not isinstance(value, (str, int, float, bool)):
            raise ProfileError(f"{where}: {key}: expected text, a number or true/false, got {_shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{where}: {key}: expected a list, got {_shown(value)}")
        return tuple(_convert(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"{where}: {key}: expected a mapping, got {_shown(value)}")
        return {_convert(k, args[0], where, f"{key} (a key)"): _convert(v, args[1], where, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ProfileError(f"{where}: {key}: expected true or false, got {_shown(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProfileError(f"{where}: {key}: expected a whole number, got {_shown(value)}")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ProfileError(f"{where}: {key}: expected a number, got {_shown(value)}")
        return float(value)
    if tp is str:
        if int_ok and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ProfileError(f"{where}: {key}: expected text, got {_shown(value)}")
        return value
    raise TypeError(f"profile field type {tp!r} is not supported")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _shown(value: Any) -> str:
    """How a wrong YAML value is named in an error: its YAML kind, and the value if it is short."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {bool: "true/false", int: "the number", float: "the number", str: "the text"}.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"


def _plain(value: Any) -> Any:
    """Tuples -> lists and dicts copied, for YAML and JSON."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Value checks beyond types


def _check_name(name: str, where: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ProfileError(f"{where}: name: '{name}' must be lower-case letters, digits, '.', '_' or '-' (it names files)")


def _check_runtime(rs: RunSettings, where: str, key: str = "runtime") -> None:
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
        from ..sinks.sinks import parse_mqtt_url

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


def _check_requirements(reqs: Tuple[str, ...], where: str, key: str) -> None:
    for i, req in enumerate(reqs):
        if not PINNED_RE.fullmatch(req.strip()):
            raise ProfileError(f"{where}: {key}[{i}]: '{req}' is not pinned; write name==version (a device installs exactly what was tested)")
        if re.match(r"edgesight\b", req.strip(), re.IGNORECASE):
            raise ProfileError(f"{where}: {key}[{i}]: edgesight itself is pinned to this toolkit's version automatically; remove it")


def _check_apt(packages: Tuple[str, ...], where: str, key: str) -> None:
    for i, pkg in enumerate(packages):
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", pkg):
            raise ProfileError(f"{where}: {key}[{i}]: '{pkg}' is not a Debian package name")


def _check_profile(p: DeviceProfile, where: str) -> None:
    _check_name(p.name, where)
    _check_runtime(p.runtime, where)
    _check_apt(p.os.apt, where, "os.apt")
    _check_requirements(p.os.requirements, where, "os.requirements")
    for name in p.os.udev_rules:
        if not UDEV_NAME_RE.fullmatch(name):
            raise ProfileError(f"{where}: os.udev_rules.{name}: a rules file name looks like 99-name.rules")
    for i, group in enumerate(p.service.groups):
        if not GROUP_RE.fullmatch(group):
            raise ProfileError(f"{where}: service.groups[{i}]: '{group}' is not a group name")
    for name in ("restart_sec", "watchdog_sec", "timeout_start_sec"):
        value = getattr(p.service, name)
        if value <= 0:
            raise ProfileError(f"{where}: service.{name}: {value} must be positive")


def _check_preset(p: UseCasePreset, where: str) -> None:
    _check_name(p.name, where)
    _check_runtime(p.runtime, where)
    _check_apt(p.apt, where, "apt")
    _check_requirements(p.requirements, where, "requirements")
    for i, extra in enumerate(p.extras):
        if not NAME_RE.fullmatch(extra):
            raise ProfileError(f"{where}: extras[{i}]: '{extra}' is not an extra name (e.g. gpio)")
    if p.review is not None and p.review.max_mb < 1:
        raise ProfileError(f"{where}: review.max_mb: {p.review.max_mb} must be at least 1")
    for k in p.train:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", k):
            raise ProfileError(f"{where}: train.{k}: option names are edgesight train's, with underscores (img_size)")


# --------------------------------------------------------------------------------------------
# Resolution and rendering


def resolve(profile: DeviceProfile, preset: Optional[UseCasePreset] = None) -> ResolvedProfile:
    """Merge a use-case preset over a device profile.

    Run settings the preset gives replace the profile's; apt packages, requirements and notes
    are added. The result is checked as a whole (a ROI inside the frame, GPIO labels with a pin).

    Args:
        profile: the device.
        preset: the use case, or None for the device's settings alone.

    Returns:
        The resolved profile; ``os.requirements`` starts with ``edgesight==<version>``.

    Raises:
        ProfileError: the combination is inconsistent; the message says which setting to change.
    """
    runtime = profile.runtime.merged(preset.runtime) if preset else profile.runtime
    extras = sorted(set(preset.extras)) if preset else []
    pin = f"edgesight{'[' + ','.join(extras) + ']' if extras else ''}=={__version__}"
    apt = _unique(profile.os.apt + (preset.apt if preset else ()))
    reqs = _unique((pin,) + profile.os.requirements + (preset.requirements if preset else ()))
    resolved = ResolvedProfile(
        profile=profile.name,
        description=profile.description,
        arch=profile.arch,
        runtime=runtime,
        os=replace(profile.os, apt=apt, requirements=reqs),
        service=profile.service,
        use_case=preset.name if preset else None,
        use_case_description=preset.description if preset else None,
        review=preset.review if preset else None,
        train=dict(preset.train) if preset else {},
        notes=profile.notes + (preset.notes if preset else ()),
    )
    _check_resolved(resolved)
    return resolved


def _unique(items: Tuple[str, ...]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(items))


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


def _check_resolved(r: ResolvedProfile) -> None:
    where = r.title
    rs = r.runtime
    if rs.gpio_on and not rs.gpio:
        raise ProfileError(f"{where}: runtime.gpio_on needs runtime.gpio, the pin to pulse")
    size = frame_size(rs)
    if rs.roi and size:
        x, y, w, h = _parse_roi(rs.roi, where, "runtime")
        if x + w > size[0] or y + h > size[1]:
            raise ProfileError(
                f"{where}: runtime.roi {rs.roi} lies outside the {size[0]}x{size[1]} frame; "
                "choose a window inside it or a larger width/height"
            )


def _arg(value: Any) -> str:
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


def train_args(resolved: ResolvedProfile) -> List[str]:
    """The recommended ``edgesight train`` options of the use case (``hflip: false`` -> ``--no-hflip``)."""
    args: List[str] = []
    for key, value in resolved.train.items():
        flag = key.replace("_", "-")
        if value is True:
            args.append(f"--{flag}")
        elif value is False:
            args.append(f"--no-{flag}")
        else:
            args += [f"--{flag}", _arg(value)]
    return args


def _systemd_word(arg: str) -> str:
    """Quote one ExecStart argument: systemd expands % specifiers and $VARIABLES itself."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(resolved: ResolvedProfile, prefix: str, user: str) -> str:
    """The systemd unit that runs ``edgesight run`` with the profile's settings.

    The service runs as ``user`` with the profile's groups, ``Type=notify`` with a watchdog that
    the runtime feeds, and ``Restart=on-failure``. ``ExecStart`` is
    ``<prefix>/current/venv/bin/edgesight run <prefix>/current/model <run_args>``.

    Args:
        resolved: the resolved profile.
        prefix: the install prefix, absolute (or the ``@PREFIX@`` placeholder of a deploy archive).
        user: the service user (or ``@USER@``).

    Returns:
        The unit file's text.

    Raises:
        ProfileError: a prefix or user name that cannot be written into a unit safely.
    """
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]*|@PREFIX@", prefix):
        raise ProfileError(f"install prefix '{prefix}': use an absolute path of letters, digits and . _ / + -")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*|@USER@", user):
        raise ProfileError(f"service user '{user}': use lower-case letters, digits, - and _")
    prefix = prefix.rstrip("/") or "/"
    argv = [f"{prefix}/current/venv/bin/edgesight", "run", f"{prefix}/current/model", *run_args(resolved)]
    svc = resolved.service
    return Template(builtin_template("edgesight.service.in")).substitute(
        profile=resolved.profile,
        use_case=f" + {resolved.use_case}" if resolved.use_case else "",
        user=user,
        groups=" ".join(svc.groups),
        exec_start=" ".join(_systemd_word(a) for a in argv),
        restart_sec=_arg(svc.restart_sec),
        watchdog_sec=_arg(svc.watchdog_sec),
        timeout_start_sec=_arg(svc.timeout_start_sec),
    )


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line text (boot config, udev rules) as readable ``|`` blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML in the given key order, multi-line text as blocks (deterministic for equal input)."""
    return yaml.dump(dict(data), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
