"""The edgesight wheel a deploy archive carries, built from the installed package.

A device installs edgesight from the archive, not from a package index, so ``edgesight bundle``
packs the running toolkit itself: the files of the installed ``edgesight`` package and the
metadata of its distribution (``METADATA`` with the dependencies, ``entry_points.txt`` with the
``edgesight`` command, the licence). It works the same whether edgesight was installed from a
wheel (the files its ``RECORD`` lists) or in editable mode from a checkout (the folders the
import system maps ``edgesight`` and its sub-packages to), and needs no build backend or network.

``wheel_bytes`` is pure: equal files give equal bytes (entries sorted, the dist-info folder last,
fixed timestamps and modes, ``RECORD`` with the sha256 and size of every file), so the archive
that holds the wheel is reproducible too.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from ..errors import BundleError

DIST = "edgesight"
# The earliest time a zip entry can carry: every entry gets it.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_LEVEL = 9
WHEEL_TAG = "py3-none-any"
# dist-info files an installer writes about one installation; the wheel gets fresh RECORD and WHEEL.
INSTALL_ONLY = frozenset({"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json", "direct_url.json.lock"})
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo", "~")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so the mode below is read by installers
    info.external_attr = (0o100644 << 16)
    return info


def wheel_name(name: str, version: str) -> str:
    """The file name of a pure-Python wheel: ``edgesight-0.1.0-py3-none-any.whl``."""
    return f"{re.sub(r'[-_.]+', '_', name)}-{version.replace('-', '_')}-{WHEEL_TAG}.whl"


def wheel_bytes(name: str, version: str, package_files: Mapping[str, bytes], metadata_files: Mapping[str, bytes]) -> bytes:
    """A reproducible pure-Python wheel.

    Args:
        name, version: the distribution's (``METADATA`` must say the same).
        package_files: path inside the wheel (``edgesight/cli.py``) -> bytes.
        metadata_files: path inside the ``.dist-info`` folder (``METADATA``, ``licenses/LICENSE``)
            -> bytes; ``RECORD`` and ``WHEEL`` are written here.

    Returns:
        The ``.whl`` bytes: entries sorted, the dist-info folder last with ``RECORD`` at its end,
        every entry dated 1980-01-01 with mode 0644.
    """
    dist_info = f"{re.sub(r'[-_.]+', '_', name)}-{version.replace('-', '_')}.dist-info"
    meta = {k: v for k, v in metadata_files.items() if k not in INSTALL_ONLY}
    meta["WHEEL"] = f"Wheel-Version: 1.0\nGenerator: edgesight\nRoot-Is-Purelib: true\nTag: {WHEEL_TAG}\n".encode("ascii")
    entries: List[Tuple[str, bytes]] = sorted(package_files.items())
    entries += sorted((f"{dist_info}/{k}", v) for k, v in meta.items())
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in entries) + f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode("utf-8")))
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as zf:
        for path, data in entries:
            zf.writestr(_zip_info(path), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL)
    return raw.getvalue()


def _installed_distribution() -> importlib.metadata.Distribution:
    """The installed edgesight distribution: a ``.dist-info`` with the version being run.

    A checkout's ``edgesight.egg-info`` folder, found first when the checkout is the working
    directory, describes the source tree, not the installation; it is passed over.
    """
    from .. import __version__

    for dist in importlib.metadata.distributions(name=DIST):
        if dist.read_text("WHEEL") is not None and dist.version == __version__:
            return dist
    raise BundleError(
        f"no installed {DIST} {__version__} distribution (.dist-info) found for {sys.executable}; "
        f"install it with pip (pip install -e . in a checkout) so its wheel can travel in the archive"
    )


def _wanted(path: str) -> bool:
    parts = path.split("/")
    return not (SKIPPED_DIRS & set(parts) or any(p.startswith(".") for p in parts) or path.endswith(SKIPPED_SUFFIXES))


def _walk(root: Path, prefix: str) -> Iterator[Tuple[str, Path]]:
    """(path in the wheel, file) for every file under ``root``, links to files followed."""
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            rel = f"{prefix}/{path.relative_to(root).as_posix()}"
            if _wanted(rel) and path.is_file():
                yield rel, path


def _package_roots() -> Dict[str, List[Path]]:
    """Import name -> folders, for ``edgesight`` and any sub-package mapped to a folder of its own.

    In a wheel or a strict editable install, ``edgesight`` is one folder tree. A lenient editable
    install maps each sub-package to its source folder through setuptools' finder, whose
    ``MAPPING`` names them.
    """
    spec = importlib.util.find_spec(DIST)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"the {DIST} package cannot be found by {sys.executable}; install it with pip")
    roots: Dict[str, List[Path]] = {DIST: [Path(p) for p in spec.submodule_search_locations]}
    for finder in sys.meta_path:
        module = sys.modules.get(getattr(finder, "__module__", "") or "")
        mapping = getattr(module, "MAPPING", None) if module is not None else None
        if isinstance(mapping, dict):
            for name, folder in mapping.items():
                if isinstance(name, str) and name.startswith(DIST + ".") and isinstance(folder, str):
                    roots.setdefault(name, []).append(Path(folder))
    return roots


def installed_package_files(dist: Optional[importlib.metadata.Distribution] = None) -> Dict[str, bytes]:
    """The files of the installed edgesight package (``edgesight/...`` -> bytes), bytecode left out."""
    dist = dist or _installed_distribution()
    listed = [str(f) for f in (dist.files or []) if str(f).startswith(DIST + "/")]
    files: Dict[str, bytes] = {}
    if listed:
        for rel in listed:
            if _wanted(rel):
                files[rel] = Path(str(dist.locate_file(rel))).read_bytes()
        return files
    # Editable: the folders the import system finds, shallow names first, so that a sub-package
    # mapped to a folder of its own replaces whatever its parent's folder held under its name.
    for name, folders in sorted(_package_roots().items(), key=lambda item: item[0].count(".")):
        prefix = name.replace(".", "/")
        if name != DIST:
            for rel in [r for r in files if r.startswith(prefix + "/")]:
                del files[rel]
        for folder in folders:
            for rel, path in _walk(folder, prefix):
                files.setdefault(rel, path.read_bytes())
    if f"{DIST}/__init__.py" not in files:
        raise BundleError(f"the installed {DIST} package has no {DIST}/__init__.py; reinstall it with pip")
    return files


def installed_metadata_files(dist: Optional[importlib.metadata.Distribution] = None) -> Dict[str, bytes]:
    """The installed distribution's own ``.dist-info`` files (``METADATA``, ``entry_points.txt``,
    ``licenses/...``), without those that describe one installation."""
    dist = dist or _installed_distribution()
    files: Dict[str, bytes] = {}
    for entry in dist.files or []:
        parts = entry.parts
        if len(parts) < 2 or not parts[0].endswith(".dist-info"):
            continue
        rel = "/".join(parts[1:])
        if rel not in INSTALL_ONLY and _wanted(rel):
            files[rel] = Path(str(dist.locate_file(entry))).read_bytes()
    for rel in ("METADATA", "entry_points.txt"):
        text = dist.read_text(rel)
        if rel not in files and text is not None:
            files[rel] = text.encode("utf-8")
    if "METADATA" not in files:
        raise BundleError(f"the installed {DIST} {dist.version} has no METADATA; reinstall it with pip")
    return files


def installed_wheel() -> Tuple[str, bytes]:
    """The installed edgesight as a reproducible wheel: (file name, bytes).

    Raises:
        BundleError: edgesight is not installed as a distribution pip knows.
    """
    dist = _installed_distribution()
    return wheel_name(DIST, dist.version), wheel_bytes(DIST, dist.version, installed_package_files(dist), installed_metadata_files(dist))


def installed_requirements() -> List[str]:
    """The ``Requires-Dist`` lines of the installed edgesight (with their markers and extras)."""
    return list(_installed_distribution().requires or [])
