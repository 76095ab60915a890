"""The settings of a device profile and a use-case preset, as frozen dataclasses.

A device profile (``firmware_configs/<name>.yaml``) holds what a board needs: the runtime
settings (``RunSettings``: camera source, capture size and rate, interpreter threads, CPU or Edge
TPU) and the OS side (``OsSettings``: a boot-config fragment for the camera, udev rules, apt
packages, pinned Python requirements; ``ServiceSettings``: the systemd service). A use-case preset
(``firmware_configs/presets/``) layers an application on top. ``ResolvedProfile`` is the two
merged, what a deployment needs; ``to_dict``, ``train_args`` and ``dump_yaml`` give its plain-data
and YAML form (``profile.yaml``, ``edgesight profiles show``). Loading and checking them is
``profiles``' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from .. import __version__
from .runsettings import ReviewSettings, RunSettings, _arg, _plain, run_args

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
        python: the Python of the device's OS (``"3.11"`` on Debian 12 / Raspberry Pi OS
            Bookworm): the wheelhouse holds wheels for it. None: this workstation's, for
            ``arch: any``.
        glibc: the device's C library version (``"2.36"`` on Debian 12, ``ldd --version``): no
            wheel needing a newer one is chosen. None: this workstation's for ``arch: any``,
            else 2.17 (manylinux2014).
    """

    boot_config: Optional[str] = None
    boot_config_path: str = "/boot/firmware/config.txt"
    udev_rules: Dict[str, str] = field(default_factory=dict)
    apt: Tuple[str, ...] = ()
    requirements: Tuple[str, ...] = ()
    system_site_packages: bool = False
    python: Optional[str] = None
    glibc: Optional[str] = None

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
class DeviceProfile:
    """A device: its runtime settings and its OS side (``firmware_configs/<name>.yaml``)."""

    name: str
    description: str
    arch: str = "any"
    runtime: RunSettings = field(default_factory=RunSettings)
    os: OsSettings = field(default_factory=OsSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    notes: Tuple[str, ...] = ()
    # A use case already merged in (a file printed by `edgesight profiles show --preset`); not a
    # key of profile files.
    applied: Optional["UseCasePreset"] = field(default=None, metadata={"internal": True})


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


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line text (boot config, udev rules) as readable ``|`` blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML in the given key order, multi-line text as blocks (deterministic for equal input)."""
    return yaml.dump(dict(data), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
