"""Device profiles and use-case presets: loading, strict checking and merging.

A device profile (``firmware_configs/<name>.yaml``) says how ``edgesight run`` is set up on a
board; a use-case preset (``firmware_configs/presets/``) layers an application on top: smoothing,
a region of interest, MQTT, a GPIO reject gate, and the recommended ``edgesight train`` options.
``load_profile`` and ``load_preset`` read them into the dataclasses of ``settings``; ``resolve``
merges the two. ``render`` turns the result into a systemd unit and YAML.

Every runtime key is the ``edgesight run`` option of the same name (``top_k`` is ``--top-k``), so
a profile can only say what the runtime can do. Files are checked strictly: an unknown key or a
wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
import re
import typing
from dataclasses import MISSING, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from .. import __version__
from ..errors import ProfileError
from .runsettings import _check_runtime, _parse_roi, check_state_path, frame_size
from .settings import DeviceProfile, ResolvedProfile, Scalar, UseCasePreset

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# name==version, optionally with extras and an environment marker: the device installs exactly this.
PINNED_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?===?[A-Za-z0-9.+!*_-]+(\s*;\s*\S.*)?")
UDEV_NAME_RE = re.compile(r"[0-9]{2}-[A-Za-z0-9._-]+\.rules")
GROUP_RE = re.compile(r"[a-z_][a-z0-9_-]*")


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
    if "format" in data:
        return _load_shown(data, where)
    data.setdefault("name", path.stem)
    profile = _build(DeviceProfile, data, where, "")
    _check_profile(profile, where)
    return profile


SHOWN_FORMAT = "edgesight.profile/1"
PIN_RE = re.compile(r"edgesight(\[(?P<extras>[A-Za-z0-9,._-]+)\])?==\S+")


def _load_shown(data: Dict[str, Any], where: str) -> DeviceProfile:
    """A profile in the form ``edgesight profiles show`` prints (and a deploy archive's
    ``profile.yaml``): the profile with any use case already merged in. ``run_args`` and
    ``train_args`` are derived, so they must match ``runtime`` and ``train``; the edgesight pin is
    made again for this version."""
    if data.get("format") != SHOWN_FORMAT:
        raise ProfileError(f"{where}: format {_shown(data.get('format'))} is not {SHOWN_FORMAT}; start from `edgesight profiles show NAME`")
    data = dict(data)
    derived = {k: data.pop(k) for k in ("run_args", "train_args") if k in data}
    data.pop("format")
    data.pop("toolkit_version", None)
    use_case = {k: data.pop(k) for k in ("use_case", "use_case_description", "review", "train") if k in data}
    data["name"] = data.pop("profile", None)
    os_part = dict(data.get("os") or {})
    extras: Tuple[str, ...] = ()
    reqs = list(os_part.get("requirements") or [])
    pins = [r for r in reqs if isinstance(r, str) and PIN_RE.fullmatch(r)]
    if pins:
        found = PIN_RE.fullmatch(pins[0]).group("extras")
        extras = tuple(found.split(",")) if found else ()
        os_part["requirements"] = [r for r in reqs if r not in pins]
        data["os"] = os_part
    profile = _build(DeviceProfile, data, where, "")
    _check_profile(profile, where)
    if use_case.get("use_case") is not None or extras:
        preset = _build(UseCasePreset, {"name": use_case.get("use_case") or profile.name, "extras": list(extras),
                                        "description": use_case.get("use_case_description") or "",
                                        **{k: use_case[k] for k in ("review", "train") if use_case.get(k) is not None}}, where, "")
        profile = replace(profile, applied=preset)
    shown = resolve(profile).to_dict()
    for key, value in derived.items():
        if value != shown.get(key):
            raise ProfileError(f"{where}: {key} does not match the settings it is made from; edit "
                               f"{'runtime' if key == 'run_args' else 'train'} instead, or delete {key}")
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
    known = [f.name for f in fields(cls) if not f.metadata.get("internal")]
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


# --------------------------------------------------------------------------------------------
# Value checks beyond types


def _check_name(name: str, where: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ProfileError(f"{where}: name: '{name}' must be lower-case letters, digits, '.', '_' or '-' (it names files)")


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
    for key, value, example in (("os.python", p.os.python, "3.11"), ("os.glibc", p.os.glibc, "2.36")):
        if value is not None and not re.fullmatch(r"[0-9]+\.[0-9]+(\.[0-9]+)?", value):
            raise ProfileError(f"{where}: {key}: '{value}' is not a version; write it quoted, like \"{example}\"")
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
    if p.review is not None:
        check_state_path(p.review.dir, where, "review.dir")
    for k in p.train:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", k):
            raise ProfileError(f"{where}: train.{k}: option names are edgesight train's, with underscores (img_size)")


# --------------------------------------------------------------------------------------------
# Resolution


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
    if profile.applied is not None:
        if preset is not None:
            raise ProfileError(f"{profile.name}: use case '{profile.applied.name}' is already applied (a file printed by "
                               "`edgesight profiles show --preset`); give no use case, or start from the plain profile")
        preset = profile.applied
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
