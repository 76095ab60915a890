"""Atomic file writes and swaps: a crash, a power cut or a second writer never leaves a
half-written file, a missing folder or a dangling link behind.

Files are written 0644 (readable by a service user or a web server, like any file written under
the usual umask); pass ``mode=0o600`` for one that holds a secret, ``0o755`` for a script.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

FILE_MODE = 0o644
RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


@contextmanager
def atomic_path(path: PathLike, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic on
    POSIX filesystems, and it gets ``mode`` before the rename. On error the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced before the rename), with ``mode``."""
    with atomic_path(path, mode) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: PathLike, text: str, mode: int = FILE_MODE) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: PathLike, obj: Any, mode: int = FILE_MODE) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", mode)


def unique_sibling(path: PathLike, tag: str) -> Path:
    """A name beside ``path`` that no other writer picks: ``.<name>.<tag>-<random>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(6)}")


def replace_link(link: PathLike, target: str) -> Path:
    """Point the symlink ``link`` at ``target`` in one rename.

    The new link is made under a unique temporary name beside ``link`` and renamed over it, so
    readers see the old target or the new one, never no link; two writers at once cannot take
    each other's temporary link.
    """
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = unique_sibling(link, "new")
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the C
    library, the kernel or the filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(staging: PathLike, final: PathLike) -> Path:
    """Move a fully written ``staging`` directory onto ``final``; the old one is deleted.

    Where ``final`` exists, the two are exchanged in one step (``renameat2`` with
    ``RENAME_EXCHANGE``, Linux 3.15+ on ext4, btrfs, xfs, tmpfs...), so ``final`` is never
    missing, and the old tree, now at ``staging``, is removed. Where the exchange is not
    available (another OS, a filesystem without it) the old directory is renamed to a unique
    name beside it first, leaving ``final`` missing between two renames.
    """
    staging, final = Path(staging), Path(final)
    if not os.path.lexists(final):
        try:
            os.rename(staging, final)
            return final
        except OSError as e:
            # Another writer put a folder there meanwhile: swap with it below.
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)
        return final
    old: Optional[Path] = unique_sibling(final, "old")
    os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def inside_root(root: PathLike, path: PathLike) -> Path:
    """``path`` (under ``root``) checked to resolve inside ``root``, links followed as the host
    follows them.

    Every part of ``path`` that exists is looked at: a symlink whose target, followed to the
    end, is not under ``root`` raises, naming the link, so writing to the returned path cannot
    land outside ``root`` (a crafted SD card's ``opt -> /opt``). Parts that do not exist yet are
    created later as real folders.

    Raises:
        ValueError: ``path`` is not under ``root``, or a link in it leaves ``root``; the message
            names the link and its target.
    """
    root, path = Path(root), Path(path)
    real_root = Path(os.path.realpath(root))
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise ValueError(f"{path} is not under {root}") from None
    if ".." in rel.parts:
        raise ValueError(f"{path} climbs out of {root} with '..'")
    current = root
    for part in rel.parts:
        current = current / part
        if not os.path.islink(current):
            if not os.path.lexists(current):
                break
            continue
        real = Path(os.path.realpath(current))
        if real != real_root and real_root not in real.parents:
            raise ValueError(f"{current} is a link to {os.readlink(current)}, which leaves {root}")
    return path
