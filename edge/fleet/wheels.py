"""Dependency wheels for a device: its platform, its Python, fetched once and cached.

A profile says which machine the device is (``arch``), which Python its OS runs (``os.python``)
and which C library (``os.glibc``); ``arch: any`` means this workstation's own machine, Python
and glibc unless the profile says otherwise. ``Target`` turns that into pip's platform tags and
into the environment that requirement markers are evaluated against.

pip evaluates environment markers against the machine it runs on, not the device, so the
markers of the profile's requirements and of edgesight's own dependencies are evaluated here,
against the target, and pip gets plain requirements. pip's choice is then checked the same way:
every dependency of every chosen wheel, its markers evaluated for the target, must be met by a
chosen wheel; a missing one is added and a wheel only the workstation needed is left out.

Wheels are cached per target in ``$EDGESIGHT_CACHE_DIR/wheels/<tag>`` (default
``~/.cache/edgesight/wheels``). The cache is tried first, without any index; only what it lacks
is downloaded (``pip download --only-binary=:all: --platform ... --python-version ...``).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from ..errors import DeployError, ProfileError
from .settings import ResolvedProfile

Progress = Callable[[str], None]

# Machines pip can fetch manylinux wheels for, under the names profiles may use.
MACHINES = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64"}
# The oldest glibc with wheels of each machine: manylinux1 (2.5) on x86-64, manylinux2014 on ARM.
OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17}
LEGACY_TAGS = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
# glibc assumed when a profile for another machine does not name one: manylinux2014's.
DEFAULT_GLIBC = "2.17"
MAX_ROUNDS = 4


def cache_dir() -> Path:
    """Where wheels are cached: ``$EDGESIGHT_CACHE_DIR/wheels``, else
    ``$XDG_CACHE_HOME/edgesight/wheels``, else ``~/.cache/edgesight/wheels``."""
    override = os.environ.get("EDGESIGHT_CACHE_DIR")
    if override:
        return Path(override).expanduser() / "wheels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgesight" / "wheels"


def _glibc(text: str) -> Tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class Target:
    """The platform a wheelhouse is for.

    Attributes:
        machine: ``aarch64`` or ``x86_64``.
        python: the device's Python, ``3.11`` (or ``3.11.2`` where a marker needs the patch level).
        glibc: the device's C library version, ``2.36``; wheels needing a newer one are not used.
    """

    machine: str
    python: str
    glibc: str

    @property
    def python_version(self) -> str:
        """``3.11``."""
        return ".".join(self.python.split(".")[:2])

    @property
    def tag(self) -> str:
        """``cp311-manylinux_2_36_aarch64``: the cache folder's name."""
        major, minor = _glibc(self.glibc)
        return f"cp{self.python_version.replace('.', '')}-manylinux_{major}_{minor}_{self.machine}"

    def platforms(self) -> List[str]:
        """pip's ``--platform`` values, newest first: every manylinux tag this glibc runs."""
        major, newest = _glibc(self.glibc)
        tags = []
        for minor in range(newest, OLDEST_GLIBC[self.machine] - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.machine}")
            if minor in LEGACY_TAGS:
                tags.append(f"{LEGACY_TAGS[minor]}_{self.machine}")
        return tags

    def environment(self) -> Dict[str, str]:
        """The values of environment markers (PEP 508) on the device, ``extra`` empty."""
        full = self.python if self.python.count(".") >= 2 else f"{self.python}.0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": self.python_version,
            "sys_platform": "linux",
            "extra": "",
        }

    def describe(self) -> str:
        return f"Python {self.python_version} on {self.machine} (glibc {self.glibc})"


def host_target() -> Target:
    """This machine, as a target."""
    libc, version = platform.libc_ver()
    if libc != "glibc" or not version:
        raise DeployError("this machine's C library is not glibc: give the profile an arch, os.python and os.glibc to fetch wheels for")
    machine = MACHINES.get(platform.machine().lower())
    if machine is None:
        raise DeployError(f"no manylinux wheels are fetched for this machine ({platform.machine()}); bundle with --no-wheelhouse")
    return Target(machine=machine, python="%d.%d" % sys.version_info[:2], glibc=version)


def target_of(resolved: ResolvedProfile) -> Target:
    """The device of a profile: its ``arch``, ``os.python`` and ``os.glibc``.

    Raises:
        ProfileError: an arch with no manylinux wheels, a missing ``os.python`` for another
            machine than this one, or a malformed version; the message says what to add.
    """
    where = f"profile {resolved.profile}"
    python, glibc = resolved.os.python, resolved.os.glibc
    for key, value in (("os.python", python), ("os.glibc", glibc)):
        if value is not None and not re.fullmatch(r"[0-9]+\.[0-9]+(\.[0-9]+)?", value):
            raise ProfileError(f"{where}: {key}: '{value}' is not a version like \"3.11\" or \"2.36\"")
    if resolved.arch == "any":
        host = host_target()
        return Target(machine=host.machine, python=python or host.python, glibc=glibc or host.glibc)
    machine = MACHINES.get(resolved.arch.lower())
    if machine is None:
        raise ProfileError(f"{where}: arch '{resolved.arch}' has no manylinux wheels on the package index (aarch64 and x86_64 do); "
                           "bundle with --no-wheelhouse so the device installs from its own index (piwheels on 32-bit Raspberry Pi OS)")
    if python is None:
        raise ProfileError(f"{where}: os.python is needed to fetch wheels for {machine}: add python: \"3.11\" (the Python of the "
                           "device's OS; Debian 12 / Raspberry Pi OS Bookworm has 3.11) under os:, or bundle with --no-wheelhouse")
    return Target(machine=machine, python=python, glibc=glibc or DEFAULT_GLIBC)


# --------------------------------------------------------------------------------------------
# Markers, evaluated for the device


def _applies(req: Requirement, env: Dict[str, str], extras: Iterable[str] = ()) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def _plain(req: Requirement) -> str:
    """The requirement without its marker: what pip gets."""
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def _parse(text: str, where: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as e:
        raise ProfileError(f"{where}: '{text}' is not a valid requirement ({e})") from e


def device_requirements(resolved: ResolvedProfile, target: Target, edgesight_requires: Sequence[str]) -> List[str]:
    """The plain requirements the device needs besides edgesight, markers evaluated for ``target``.

    Args:
        resolved: the profile; ``os.requirements`` starts with the ``edgesight[extras]==version`` pin.
        target: the device.
        edgesight_requires: edgesight's ``Requires-Dist`` lines (markers and extras included).

    Returns:
        Requirements without markers, edgesight's dependencies (for the pin's extras) first, then
        the profile's that apply to the device.
    """
    env = target.environment()
    extras: Tuple[str, ...] = ()
    wanted: List[str] = []
    for text in resolved.os.requirements:
        req = _parse(text, f"profile {resolved.title}: os.requirements")
        if canonicalize_name(req.name) == "edgesight":
            extras = tuple(sorted(req.extras))
        elif _applies(req, env):
            wanted.append(_plain(req))
    own = [_plain(r) for r in (_parse(t, "edgesight's metadata") for t in edgesight_requires) if _applies(r, env, extras)]
    return list(dict.fromkeys(own + wanted))


# --------------------------------------------------------------------------------------------
# The wheels pip chose, checked for the device


@dataclass(frozen=True)
class Wheel:
    """One wheel file: its name, version, tags and declared dependencies."""

    path: Path
    name: str
    version: str
    tags: frozenset
    requires: Tuple[str, ...]


def read_wheel(path: Path) -> Wheel:
    """A wheel's name, version, tags and ``Requires-Dist`` (read from its METADATA)."""
    try:
        name, version, _, tags = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as zf:
            meta = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            if meta is None:
                raise DeployError(f"{path}: no .dist-info/METADATA in the wheel; delete it from the cache and fetch again")
            message = BytesParser().parsebytes(zf.read(meta), headersonly=True)
    except (InvalidWheelFilename, zipfile.BadZipFile, OSError) as e:
        raise DeployError(f"{path}: not a usable wheel ({e}); delete it from the cache and fetch again") from e
    return Wheel(path=path, name=str(name), version=str(version), tags=frozenset(tags), requires=tuple(message.get_all("Requires-Dist") or ()))


def select(wheels: Sequence[Wheel], roots: Sequence[str], target: Target) -> Tuple[List[Wheel], List[str]]:
    """Walk the dependencies of ``roots`` through ``wheels`` with the device's markers.

    Returns:
        The wheels the device needs, and the requirements no wheel meets (to fetch).
    """
    env = target.environment()
    by_name = {canonicalize_name(w.name): w for w in wheels}
    chosen: Dict[str, Wheel] = {}
    gaps: List[str] = []
    seen = set()
    queue: List[Tuple[Requirement, Tuple[str, ...]]] = [(Requirement(r), ()) for r in roots]
    while queue:
        req, parent_extras = queue.pop(0)
        if not _applies(req, env, parent_extras):
            continue
        key = canonicalize_name(req.name)
        wheel = by_name.get(key)
        if wheel is None or not req.specifier.contains(wheel.version, prereleases=True):
            gaps.append(_plain(req))
            continue
        chosen[key] = wheel
        extras = tuple(sorted(req.extras))
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        for dep in wheel.requires:
            try:
                queue.append((Requirement(dep), extras))
            except InvalidRequirement as e:
                raise DeployError(f"{wheel.path}: Requires-Dist '{dep}' is not valid ({e}); pin another version of {wheel.name}") from e
    return sorted(chosen.values(), key=lambda w: canonicalize_name(w.name)), list(dict.fromkeys(gaps))


def glibc_needed(wheels: Iterable[Wheel]) -> Optional[str]:
    """The newest glibc any of ``wheels`` needs (``2.27``), or None for pure-Python wheels only."""
    needed = None
    for wheel in wheels:
        versions = []
        for tag in wheel.tags:
            m = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag.platform)
            legacy = re.fullmatch(r"(manylinux\d+)_\w+", tag.platform)
            if m:
                versions.append((int(m.group(1)), int(m.group(2))))
            elif legacy:
                minor = {v: k for k, v in LEGACY_TAGS.items()}.get(legacy.group(1))
                if minor is not None:
                    versions.append((2, minor))
        if versions:
            lowest = min(versions)
            needed = lowest if needed is None or lowest > needed else needed
    return None if needed is None else "%d.%d" % needed


# --------------------------------------------------------------------------------------------
# pip


def _pip(args: List[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    except OSError as e:
        raise DeployError(f"cannot run pip with {sys.executable} ({e}); install pip for it (python -m ensurepip)") from e


def _download_args(target: Target) -> List[str]:
    args = ["download", "--only-binary=:all:", "--implementation", "cp", "--python-version", target.python_version,
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    for tag in target.platforms():
        args += ["--platform", tag]
    return args


def _missing(stderr: str) -> str:
    """What pip could not find, from its error output."""
    m = re.search(r"No matching distribution found for (\S+)", stderr) or re.search(r"satisfies the requirement (\S+)", stderr)
    if m:
        return m.group(1)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["pip failed"])[-1]


def _from_cache(folder: Path, target: Target, reqs: Sequence[str], out: Path) -> subprocess.CompletedProcess:
    # --isolated: the cache alone decides, whatever a pip.conf or PIP_* variable adds.
    return _pip(["--isolated", *_download_args(target), "--no-index", "--find-links", str(folder), "-d", str(out), *reqs])


def _error(title: str, target: Target, folder: Path, stderr: str, offline: bool) -> DeployError:
    conflict = re.search(r"Cannot install (.+?) because these package versions have conflicting dependencies", stderr)
    if conflict:
        return DeployError(f"profile {title}: pip cannot install {conflict.group(1)} together for {target.describe()}: "
                           "their versions conflict; change the pin in the profile's os.requirements (edgesight's own "
                           "requirements are in 'pip show edgesight')")
    where = f"in the wheel cache {folder} (offline)" if offline else "on the package index (or it could not be reached)"
    fix = ("run 'edgesight wheels fetch' for this profile where the index is reachable" if offline else
           "pin a version with wheels for this platform in the profile's os.requirements, or set os.glibc to the device's (ldd --version)")
    return DeployError(f"profile {title}: no wheel of {_missing(stderr)} for {target.describe()} {where}; {fix}, "
                       "or bundle with --no-wheelhouse to install from the index on the device")


def _pick(title: str, target: Target, roots: Sequence[str], out: Path, offline: bool, say: Progress) -> List[Wheel]:
    """pip's choice for ``roots`` from the cache, filling the cache from the index first if need be."""
    folder = cache_dir() / target.tag
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployError(f"cannot create the wheel cache {folder} ({e.strerror}); set EDGESIGHT_CACHE_DIR to a writable folder") from e
    picked = _from_cache(folder, target, roots, out)
    if picked.returncode != 0 and not offline:
        say(f"fetching wheels for {target.describe()} into {folder}")
        got = _pip([*_download_args(target), "--find-links", str(folder), "-d", str(folder), *roots])
        if got.returncode != 0:
            raise _error(title, target, folder, got.stderr, offline=False)
        picked = _from_cache(folder, target, roots, out)
    if picked.returncode != 0:
        raise _error(title, target, folder, picked.stderr, offline=offline)
    return [read_wheel(folder / p.name) for p in sorted(out.glob("*.whl"))]


def fetch(title: str, target: Target, reqs: Sequence[str], offline: bool = False, progress: Optional[Progress] = None) -> List[Wheel]:
    """Every wheel ``reqs`` need on ``target``, from the cache or the package index.

    Args:
        title: the profile, for messages.
        target: the device.
        reqs: plain requirements (markers already evaluated for the device).
        offline: use the cache only, never an index.
        progress: called with one line per step.

    Returns:
        The chosen wheels (files in the target's cache folder), sorted by name.

    Raises:
        DeployError: a requirement has no wheel for the target; the message names it and the fix.
    """
    say = progress or (lambda line: None)
    roots = list(reqs)
    for _ in range(MAX_ROUNDS):
        with tempfile.TemporaryDirectory(prefix="edgesight-wheels-") as tmp:
            wheels = _pick(title, target, roots, Path(tmp), offline, say)
        chosen, gaps = select(wheels, roots, target)
        if not gaps:
            return chosen
        # pip judged these markers on this machine: the device needs more than it chose.
        roots = list(dict.fromkeys(roots + gaps))
    raise DeployError(f"profile {title}: the dependencies of {', '.join(reqs)} for {target.describe()} did not settle; "
                      "pin the packages in the profile's os.requirements")
