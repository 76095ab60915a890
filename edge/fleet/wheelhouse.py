"""The ``wheelhouse/`` folder of a deploy archive: what the device's venv is installed from.

By default it holds edgesight's own wheel (built from the installed package, ``wheelbuild``) and
every dependency wheel for the device's machine, Python and glibc (``wheels``): ``install.sh``
then runs ``pip install --no-index --find-links wheelhouse``, with no network. It first checks
that the device's Python, machine and glibc are those the wheels were chosen for, as recorded
here in its settings and in ``MANIFEST.json``.

A slim archive (``edgesight bundle --no-wheelhouse``) holds edgesight's wheel alone: pip finds
edgesight there and the dependencies on the device's package index.

Some of what a device needs is not on any package index: picamera2 and libcamera come from
Raspberry Pi OS's apt, the Edge TPU library from Coral's. Those are the profile's ``os.apt``
packages; ``install.sh`` checks that they are there, and that picamera2 imports and
``libedgetpu.so.1`` loads when the profile's source and device need them, printing the exact
``apt-get install`` command for what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .settings import ResolvedProfile
from .wheelbuild import installed_requirements, installed_wheel
from .wheels import Target, Wheel, device_requirements, fetch, glibc_needed, target_of

Progress = Callable[[str], None]

FOLDER = "wheelhouse"
COMPLETE, EDGESIGHT_ONLY = "complete", "edgesight"
PICAMERA2_APT = "python3-picamera2"
EDGETPU_APT = "libedgetpu1-std"


@dataclass(frozen=True)
class Wheelhouse:
    """The wheels an archive carries.

    Attributes:
        wheels: file name -> bytes, edgesight's own wheel included.
        edgesight: the file name of edgesight's wheel.
        target: the device the dependency wheels are for; None when only edgesight's wheel
            travels (the device installs the rest from its package index).
        glibc: the newest glibc any of the wheels needs (``2.27``), None for pure-Python wheels.
    """

    wheels: Dict[str, bytes]
    edgesight: str
    target: Optional[Target] = None
    glibc: Optional[str] = None

    @property
    def complete(self) -> bool:
        """Whether the device installs from the wheelhouse alone (no package index)."""
        return self.target is not None

    def files(self) -> Dict[str, bytes]:
        """Archive paths (``wheelhouse/NAME.whl``) -> bytes."""
        return {f"{FOLDER}/{name}": data for name, data in sorted(self.wheels.items())}

    def record(self) -> Dict[str, Any]:
        """What ``MANIFEST.json`` says about the wheelhouse."""
        record: Dict[str, Any] = {"complete": self.complete, "edgesight": self.edgesight}
        if self.target is not None:
            record.update(python=self.target.python_version, machine=self.target.machine, glibc=self.glibc or "",
                          platform=self.target.tag)
        return record

    def install_settings(self) -> Dict[str, str]:
        """The settings ``install.sh`` reads: how to run pip and what the device must be."""
        if self.target is None:
            return {"WHEELHOUSE": EDGESIGHT_ONLY, "WHEEL_PYTHON": "", "WHEEL_MACHINE": "", "WHEEL_GLIBC": ""}
        return {"WHEELHOUSE": COMPLETE, "WHEEL_PYTHON": self.target.python_version, "WHEEL_MACHINE": self.target.machine,
                "WHEEL_GLIBC": self.glibc or ""}

    def summary(self) -> str:
        """One line: how many wheels, their size, and for which device."""
        size = sum(len(d) for d in self.wheels.values()) / 1e6
        if self.target is None:
            return f"{FOLDER}/: {self.edgesight} only ({size:.1f} MB); the device installs the dependencies from its package index"
        needs = f", glibc {self.glibc}+" if self.glibc else ""
        return f"{FOLDER}/: {len(self.wheels)} wheels, {size:.1f} MB, for Python {self.target.python_version} on {self.target.machine}{needs}"


def edgesight_only() -> Wheelhouse:
    """A wheelhouse with edgesight's wheel alone (the slim archive)."""
    name, data = installed_wheel()
    return Wheelhouse(wheels={name: data}, edgesight=name)


def fetch_dependencies(resolved: ResolvedProfile, offline: bool = False, progress: Optional[Progress] = None) -> Tuple[Target, List[Wheel]]:
    """The dependency wheels a profile's device needs, fetched into the cache (or found there).

    Args:
        resolved: the profile with its use case.
        offline: use the wheel cache only, never a package index.
        progress: called with one line per step.

    Returns:
        The device and its wheels (files in the cache).

    Raises:
        ProfileError: the profile does not say enough about the device (``os.python``...).
        DeployError: a requirement has no wheel for the device; the message names it and the fix.
    """
    target = target_of(resolved)
    reqs = device_requirements(resolved, target, installed_requirements())
    if progress:
        progress(f"profile {resolved.title}: {len(reqs)} requirements for {target.describe()}")
    return target, fetch(resolved.title, target, reqs, offline=offline, progress=progress)


def build_wheelhouse(resolved: ResolvedProfile, offline: bool = False, progress: Optional[Progress] = None) -> Wheelhouse:
    """edgesight's wheel plus every dependency wheel of the profile's device.

    Args:
        resolved: the profile with its use case.
        offline: use the wheel cache only (``edgesight wheels fetch`` fills it).
        progress: called with one line per step.

    Raises:
        ProfileError, DeployError: as for ``fetch_dependencies``.
    """
    name, data = installed_wheel()
    target, chosen = fetch_dependencies(resolved, offline=offline, progress=progress)
    wheels = {name: data}
    for wheel in chosen:
        wheels[wheel.path.name] = wheel.path.read_bytes()
    return Wheelhouse(wheels=dict(sorted(wheels.items())), edgesight=name, target=target, glibc=glibc_needed(chosen))


def os_checks(resolved: ResolvedProfile) -> Dict[str, str]:
    """What ``install.sh`` checks the OS provides, as ``what:apt-package`` words.

    ``OS_IMPORTS``: Python modules the venv must import (picamera2 for a Pi camera source);
    ``OS_LIBS``: shared libraries the loader must find (the Edge TPU runtime for a Coral device).
    """
    apt = resolved.os.apt
    imports, libs = [], []
    if (resolved.runtime.source or "").strip().lower().split(":")[0] == "picamera2":
        imports.append(f"picamera2:{next((p for p in apt if 'picamera2' in p), PICAMERA2_APT)}")
    if (resolved.runtime.device or "").startswith("coral"):
        libs.append(f"libedgetpu.so.1:{next((p for p in apt if p.startswith('libedgetpu')), EDGETPU_APT)}")
    return {"OS_IMPORTS": " ".join(imports), "OS_LIBS": " ".join(libs)}
