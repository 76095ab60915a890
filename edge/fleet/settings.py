"""The settings of a device profile and a use-case preset, as frozen dataclasses.

A device profile (``firmware_configs/<name>.yaml``) holds what a board needs: the runtime
settings (``RunSettings``: camera source, capture size and rate, interpreter threads, CPU or Edge
TPU) and the OS side (``OsSettings``: a boot-config fragment for the camera, udev rules, apt
packages, pinned Python requirements; ``ServiceSettings``: the systemd service). A use-case preset
(``firmware_configs/presets/``) layers an application on top. ``ResolvedProfile`` is the two
merged, what a deployment needs. Loading and checking them is ``profiles``' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple, Union

from .. import __version__
from .runsettings import RunSettings, _plain, run_args

Scalar = Union[str, int, float, bool]


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
        # render reads its unit template through profiles, which builds these classes.
        from .render import train_args

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
        from .render import dump_yaml

        return dump_yaml(self.to_dict())
