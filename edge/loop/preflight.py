"""Checks a run makes before it creates any output: every output path can be written, and the
``--roi`` window fits the source's first frame.

A refused run therefore leaves nothing behind (no empty ``--jsonl`` file, no folder), and an
output that could never be written is named before the first frame instead of failing later
on a sink's thread, where the data would be lost.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

from ..errors import ConfigError
from ..model.preprocess import crop_roi
from .config import RunConfig

# (flag, field, what it names): every RunConfig field that is a path the run writes.
OUTPUTS = (
    ("--jsonl", "jsonl", "file"),
    ("--save", "save", "file"),
    ("--stats-json", "stats_json", "file"),
    ("--status-file", "status_file", "file"),
    ("--capture", "capture", "folder"),
    ("--review-dir", "review_dir", "folder"),
    ("--enroll-dir", "enroll_dir", "folder"),
)


def _ancestors(path: Path) -> Iterator[Path]:
    yield path
    yield from path.parents


def check_output_path(flag: str, value: str, kind: str = "file") -> None:
    """Refuse ``value`` unless the run can create (or replace) it, without creating anything
    that stays: the nearest existing folder above it gets a probe file, removed at once.

    Raises:
        ConfigError: one line naming the flag, the path and the fix.
    """
    path = Path(value).expanduser().absolute()
    if path.exists():
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{flag} {value}: is a folder; name a file inside it")
        if kind == "folder" and not path.is_dir():
            raise ConfigError(f"{flag} {value}: is a file, not a folder; name a folder")
        if kind == "file" and not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {value}: the file is not writable; fix its permissions or name another file")
    start = path if kind == "folder" and path.is_dir() else path.parent
    for folder in _ancestors(start):
        if folder.exists():
            break
    if not folder.is_dir():
        raise ConfigError(f"{flag} {value}: {folder} is a file, not a folder; name a path under a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgesight-probe-", dir=folder)
    except OSError as e:
        reason = "the file system is read-only" if e.errno == errno.EROFS else (e.strerror or str(e)).lower()
        raise ConfigError(f"{flag} {value}: cannot write in {folder} ({reason}); name a writable location") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(cfg: RunConfig) -> None:
    """Check every output path of ``cfg`` (``-`` for standard output is always fine)."""
    for flag, field, kind in OUTPUTS:
        value = getattr(cfg, field)
        if value and value != "-":
            check_output_path(flag, str(value), kind)


class PeekedSource:
    """A source whose first frame was already read (to check it); ``read()`` returns it first.

    Everything else (counters, ``live``, ``prepare``) reads and writes through to the source.
    """

    def __init__(self, source: Any, first: Any) -> None:
        self.__dict__.update(wrapped=source, _first=first)

    def read(self):
        first = self.__dict__["_first"]
        if first is not None:
            self.__dict__["_first"] = None
            return first
        return self.wrapped.read()

    def __getattr__(self, name: str):
        return getattr(self.__dict__["wrapped"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.wrapped, name, value)

    def close(self) -> None:
        self.wrapped.close()

    def __enter__(self) -> "PeekedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_roi_fits(source: Any, roi: Optional[Tuple[int, int, int, int]]) -> Any:
    """Read the first frame of ``source`` and check that ``roi`` fits it.

    Returns:
        ``source`` itself without a ROI; else a :class:`PeekedSource` that hands out that frame.

    Raises:
        EdgesightError: the window lies outside the frame (the message gives the frame size).
    """
    if roi is None:
        return source
    first = source.read()
    if first is not None:
        crop_roi(first.image, roi)
    return PeekedSource(source, first)
