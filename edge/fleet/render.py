"""The systemd unit of a resolved profile.

``render_unit`` fills ``firmware_configs/edgesight.service.in`` with the ``edgesight run`` command
line (``run_args``) and the service settings; ``edgesight bundle`` ships the result with
placeholders for the install prefix and user, which ``install.sh`` fills in on the device.

The unit is sandboxed (read-only system, no capabilities, a system-call filter, ...), and
``DevicePolicy=closed`` lets it open only the device nodes its camera source, Edge TPU and GPIO
pin need (``hardware``).
"""

from __future__ import annotations

import re
from string import Template
from typing import Dict, List, Tuple

from ..errors import ProfileError
from ..loop.config import RunConfig
from .profiles import builtin_template
from .runsettings import _arg, run_args
from .settings import ResolvedProfile


# Hardware a profile can use -> (the comment the unit carries, its DeviceAllow= groups: names from
# /proc/devices, resolved by systemd when the service starts; glob patterns allowed).
DEVICE_GROUPS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "camera": ("USB/V4L2 camera (OpenCV): /dev/video*", ("char-video4linux",)),
    "picamera2": (
        "Raspberry Pi camera (libcamera): V4L2 nodes, media controllers, DMA heaps for its buffers",
        ("char-video4linux", "char-media", "char-dma_heap"),
    ),
    "gpio": (
        "GPIO (gpiozero): /dev/gpiochip* (lgpio), /dev/gpiomem* (bcm2835- or rpi-gpiomem, by kernel)",
        ("char-gpiochip", "char-*gpiomem*"),
    ),
    "coral:usb": ("Coral USB Accelerator (libusb): /dev/bus/usb/*", ("char-usb_device",)),
    "coral:pci": ("Coral PCIe/M.2 or Dev Board Edge TPU: /dev/apex_*", ("char-apex",)),
}
# libcamera and libusb follow hot-plugged devices through udev's netlink socket, and libusb does
# not start without it; the Edge TPU runtime lists USB Edge TPUs through libusb even when it
# opens a PCIe one.
NETLINK_HARDWARE = ("picamera2", "coral:usb", "coral:pci")


def hardware(resolved: ResolvedProfile) -> List[str]:
    """The hardware (keys of ``DEVICE_GROUPS``) that ``edgesight run`` opens with this profile.

    A camera index or ``/dev/...`` source is a V4L2 camera, ``picamera2`` the Raspberry Pi
    camera (streams, files and synthetic frames need no device); ``coral:usb`` / ``coral:pci`` is
    that Edge TPU and plain ``coral`` either; a ``gpio`` pin needs the GPIO devices. Unset
    settings are ``edgesight run``'s defaults.
    """
    rs, defaults = resolved.runtime, RunConfig()
    source = (rs.source if rs.source is not None else defaults.source).strip().lower()
    device = rs.device if rs.device is not None else defaults.device
    kinds: List[str] = []
    if source.split(":")[0] == "picamera2":
        kinds.append("picamera2")
    elif source.isdigit() or source.startswith("/dev/"):
        kinds.append("camera")
    if device.startswith("coral"):
        bus = device.split(":")[1] if ":" in device else None
        kinds += [f"coral:{bus}"] if bus else ["coral:usb", "coral:pci"]
    if rs.gpio is not None:
        kinds.append("gpio")
    return kinds


def _device_allow(kinds: List[str]) -> str:
    """The commented ``DeviceAllow=`` lines of the unit for this hardware."""
    if not kinds:
        return "# (no device nodes: the source is a stream, files or synthetic frames)"
    lines: List[str] = []
    for kind in kinds:
        note, groups = DEVICE_GROUPS[kind]
        lines.append(f"# {note}")
        lines += [f"DeviceAllow={g} rw" for g in groups if f"DeviceAllow={g} rw" not in lines]
    return "\n".join(lines)


def _systemd_word(arg: str) -> str:
    """Quote one ExecStart argument: systemd expands % specifiers and $VARIABLES itself."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(resolved: ResolvedProfile, prefix: str, user: str, release: str = "@RELEASE@") -> str:
    """The systemd unit that runs ``edgesight run`` with the profile's settings.

    The service runs as ``user`` with the profile's groups, ``Type=notify`` with a watchdog that
    the runtime feeds, and ``Restart=on-failure``. ``ExecStart`` is
    ``<prefix>/releases/<release>/venv/bin/edgesight run <prefix>/releases/<release>/model <run_args>``:
    the release is named once, so the venv and the model always come from the same one, whatever
    ``current`` points at meanwhile (each release carries its own unit; installing or rolling
    back copies it into place).

    Args:
        resolved: the resolved profile.
        prefix: the install prefix, absolute (or the ``@PREFIX@`` placeholder of a deploy archive).
        user: the service user (or ``@USER@``); never root.
        release: the release id (or ``@RELEASE@``, filled in by install.sh: the id is the hash of
            the manifest, which lists this unit).

    Returns:
        The unit file's text.

    Raises:
        ProfileError: a prefix or user name that cannot be written into a unit safely.
    """
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]*|@PREFIX@", prefix):
        raise ProfileError(f"install prefix '{prefix}': use an absolute path of letters, digits and . _ / + -")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*|@USER@", user):
        raise ProfileError(f"service user '{user}': use lower-case letters, digits, - and _")
    if user == "root":
        raise ProfileError("service user 'root': the service never runs as root; name an unprivileged account")
    if not re.fullmatch(r"[0-9a-f]{16}|@RELEASE@", release):
        raise ProfileError(f"release '{release}': expected the 16 hex digits of a release id")
    prefix = prefix.rstrip("/") or "/"
    home = f"{prefix.rstrip('/')}/releases/{release}"
    argv = [f"{home}/venv/bin/edgesight", "run", f"{home}/model", *run_args(resolved)]
    svc = resolved.service
    kinds = hardware(resolved)
    families = ["AF_UNIX", "AF_INET", "AF_INET6"] + (["AF_NETLINK"] if set(kinds) & set(NETLINK_HARDWARE) else [])
    return Template(builtin_template("edgesight.service.in")).substitute(
        profile=resolved.profile,
        use_case=f" + {resolved.use_case}" if resolved.use_case else "",
        user=user,
        groups=" ".join(svc.groups),
        exec_start=" ".join(_systemd_word(a) for a in argv),
        restart_sec=_arg(svc.restart_sec),
        watchdog_sec=_arg(svc.watchdog_sec),
        timeout_start_sec=_arg(svc.timeout_start_sec),
        device_allow=_device_allow(kinds),
        address_families=" ".join(families),
    )
