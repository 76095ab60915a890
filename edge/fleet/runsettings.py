"""The ``edgesight run`` options of a device profile: ``RunSettings``, its checks and its arguments.

``RunSettings`` is derived from :class:`~edgesight.edge.loop.config.RunConfig`: each field is the
``edgesight run`` option of the same name (``top_k`` is ``--top-k``) with its type and range, so
a profile can only say what the runtime can do; ``ReviewSettings`` (a use case's
saved frames) becomes the ``--review-*`` options. ``_check_runtime`` refuses values the runtime
would refuse, ``frame_size`` reads the capture size the settings ask for, and ``run_args`` turns
resolved settings into the argument list that ``run.args`` and the systemd unit carry to the
device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, make_dataclass, replace
from dataclasses import replace as dc_replace
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional, Protocol, Tuple

from .. import options
from ..errors import ConfigError, EdgesightError, ProfileError
from ..loop.config import DEVICE_RE, RunConfig
from ..model.preprocess import parse_roi

# The ``edgesight run`` options a device profile or use-case preset may set. The rest are for a
# person at a terminal (a window, a recording, a time limit), come from the bundle (labels), or
# come from ``review:`` (``ReviewSettings``).
# A profile never turns off the model's sha256 check on a fleet (``no_verify``).
NOT_IN_PROFILES = ("labels", "no_verify", "realtime", "loop", "display", "save", "review_dir", "review_label", "review_max_mb",
                   "max_frames", "duration", "frame_workers", "max_pixels")
# The service's state directory (StateDirectory= and WorkingDirectory= of the unit): relative
# output paths of a profile land here, and absolute ones may only point here.
STATE_DIR = "/var/lib/edgesight"


def _merged(self: Any, over: Any) -> Any:
    """These settings with every value that ``over`` sets replacing ours."""
    return replace(self, **{f.name: getattr(over, f.name) for f in fields(over) if getattr(over, f.name) is not None})


def _to_dict(self: Any) -> Dict[str, Any]:
    return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


def _run_settings() -> type:
    """``RunSettings``: the :class:`~edgesight.edge.loop.config.RunConfig` fields a profile may
    set, each optional (None: the run default), in RunConfig's order. Derived, not declared, so
    a profile can say exactly what ``edgesight run`` can do."""
    specs = [s for s in options.specs(RunConfig) if s.name not in NOT_IN_PROFILES]
    cls = make_dataclass(
        "RunSettings",
        [(s.name, Optional[Tuple[s.base, ...]] if s.multiple else Optional[s.base],
          field(default=None, metadata={"int_ok": s.opt.int_as_text})) for s in specs],
        frozen=True,
        namespace={"merged": _merged, "to_dict": _to_dict, "__module__": __name__,
                   "__doc__": "Options of ``edgesight run`` set by a profile; each field is the flag of the same name, "
                              "``None`` its default (see ``RunConfig`` for types, defaults and ranges)."},
    )
    return cls


RunSettings = _run_settings()


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


class RunArgsSource(Protocol):
    """What ``run_args`` reads: a resolved profile (``settings.ResolvedProfile``) or the like."""

    @property
    def runtime(self) -> Any: ...

    @property
    def review(self) -> Optional[ReviewSettings]: ...


def _plain(value: Any) -> Any:
    """Tuples -> lists and dicts copied, for YAML and JSON."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_runtime(rs: Any, where: str, key: str = "runtime") -> None:
    """Refuse values ``edgesight run`` would refuse (RunConfig's types and ranges); the error
    names ``where`` and ``key.<field>``."""

    def bad(name: str, message: str) -> ProfileError:
        return ProfileError(f"{where}: {key}.{name}: {message}")

    for f in fields(rs):
        value = getattr(rs, f.name)
        if value is None:
            continue
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            # One run argument per line in run.args, one word per argument in ExecStart.
            if isinstance(text, str) and (not text.strip() or any(ord(c) < 32 for c in text)):
                raise bad(f.name, f"{text!r} must be non-empty text on one line")
        spec = options.spec(RunConfig, f.name)
        try:
            options.check_value(dc_replace(spec, name=f"{key}.{f.name}"), value, where)
        except ConfigError as e:
            raise ProfileError(str(e)) from None
    for s in options.specs(RunConfig):
        value = getattr(rs, s.name, None)
        if s.opt.writes and value is not None:
            check_state_path(value, where, f"{key}.{s.name}")
    if rs.device is not None and not DEVICE_RE.fullmatch(rs.device):
        raise bad("device", f"'{rs.device}' is not cpu, coral, coral:usb or coral:pci")
    if rs.roi is not None:
        _parse_roi(rs.roi, where, key)
    if rs.mqtt is not None:
        from ..sinks import parse_mqtt_url

        try:
            parse_mqtt_url(rs.mqtt)
        except ConfigError as e:
            raise bad("mqtt", str(e)) from e


def check_state_path(value: str, where: str, key: str) -> str:
    """Refuse an output path of a profile that could write outside the service's state directory.

    The service runs in ``STATE_DIR``, so a relative path lands there; an absolute one must lie
    under it. ``..`` is refused anywhere: the device-side scripts remove and write these files as
    root, so a profile must not be able to name ``/etc/passwd`` or ``../../etc/passwd``.

    Args:
        value: the path the profile gives.
        where: the file (or profile title) named in the error.
        key: the key named in the error (``runtime.status_file``).

    Returns:
        ``value``.

    Raises:
        ProfileError: the path leaves the state directory; the message names the file and key.
    """
    parts = PurePosixPath(value).parts
    inside = not value.startswith("/") or (value.startswith(STATE_DIR + "/") and len(parts) > 4)
    if ".." in parts or not inside:
        raise ProfileError(
            f"{where}: {key}: '{value}' is outside the service's state directory; give a relative path "
            f"(it lands in {STATE_DIR}) or one under {STATE_DIR}/, without '..'"
        )
    return value


def _parse_roi(text: str, where: str, key: str) -> Tuple[int, int, int, int]:
    """``x,y,w,h`` as ``edgesight run --roi`` reads it; the error names ``where`` and the key."""
    try:
        return parse_roi(text)
    except EdgesightError as e:
        raise ProfileError(f"{where}: {key}.roi: {str(e).split(': ', 1)[-1]}") from None


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


def run_args(resolved: RunArgsSource) -> List[str]:
    """The ``edgesight run`` arguments (after the bundle path) for these settings.

    Each set field becomes its flag, as RunConfig declares it: ``top_k: 1`` -> ``--top-k 1``,
    ``headless: true`` -> ``--headless`` (false: omitted, the run default), a list repeats the
    flag; ``review`` becomes the ``--review-*`` options.

    Args:
        resolved: the resolved profile.

    Returns:
        The arguments, in RunConfig's field order.
    """
    values = {f.name: getattr(resolved.runtime, f.name) for f in fields(resolved.runtime)}
    if resolved.review is not None:
        rv = resolved.review
        values.update(review_dir=rv.dir, review_label=rv.labels, review_max_mb=float(rv.max_mb))
    return options.to_args(RunConfig, values)


def check_run_args(args: List[str], where: str) -> Dict[str, Any]:
    """Read a ``run.args`` back (the inverse of ``run_args``), refusing what no profile can say.

    Only the flags a profile or ``review:`` may set are accepted, each as ``run_args`` writes it
    (``--flag`` or ``--flag VALUE``; no ``--config``, no ``--flag=VALUE``), and every output path
    must stay in the service's state directory, as when the profile was loaded.

    Args:
        args: the lines of ``run.args``.
        where: the file named in errors.

    Returns:
        Field name -> value as text (a tuple for repeatable flags, True for switches).

    Raises:
        ProfileError: an option a profile cannot set, a missing value, or an output path
            outside the state directory; the message names the file and the flag.
    """
    allowed = {f.name for f in fields(RunSettings)} | {"review_dir", "review_label", "review_max_mb"}
    by_flag = {s.flag: s for s in options.specs(RunConfig) if s.name in allowed}
    values: Dict[str, Any] = {}
    i = 0
    while i < len(args):
        s = by_flag.get(args[i])
        if s is None:
            raise ProfileError(f"{where}: '{args[i]}' is not an option a device profile sets; bundle the archive again")
        if s.base is bool:
            values[s.name] = True
            i += 1
            continue
        if i + 1 >= len(args):
            raise ProfileError(f"{where}: {s.flag} has no value; bundle the archive again")
        value = args[i + 1]
        if s.opt.writes:
            check_state_path(value, where, s.flag)
        values[s.name] = values.get(s.name, ()) + (value,) if s.multiple else value
        i += 2
    return values
