"""A JSON Lines log: one event per result, written straight through to the file."""

from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EdgesightError
from ..frames import Frame, Result
from ..fsutil import PathLike
from ._common import ChangeFilter
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


class JsonlSink(Sink):
    """Writes ``Result.to_event()`` as one JSON object per line.

    The file is created (or truncated) when the sink is built and every line is written straight
    to the operating system, so ``tail -f`` sees each result as it happens and a power cut loses
    at most the line being written. If a write fails (a full disk, a removed SD card) the sink
    logs one error naming the file and disables itself; the camera loop carries on.

    Attributes:
        written: lines written so far.
        disabled: True once a write failed.
        error: the ``OSError`` that disabled the sink, else None.
    """

    def __init__(self, path: PathLike, on_change_only: bool = False) -> None:
        """Create or truncate the file.

        Args:
            path: the .jsonl file to write; ``-`` writes to standard output.
            on_change_only: write only the first result and those whose label differs from the
                previous result this sink received.

        Raises:
            EdgesightError: the file cannot be created.
        """
        self.path = str(path)
        self.on_change_only = on_change_only
        self.written = 0
        self.disabled = False
        self.error: Optional[OSError] = None
        self._change = ChangeFilter()
        self._file = None
        if self.path != "-":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # Unbuffered: each line reaches the OS at once, and a failed write leaves no
                # buffered bytes behind that would fail again when the file is closed.
                self._file = open(self.path, "wb", buffering=0)
            except OSError as e:
                raise EdgesightError(
                    f"cannot create the JSONL log {self.path}: {e.strerror or e}; choose a writable path"
                ) from e

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Append the result's event as one line (unless filtered or disabled)."""
        if self.disabled:
            return
        changed = self._change.changed(result.label)
        if self.on_change_only and not changed:
            return
        line = json.dumps(result.to_event(), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            if self._file is None:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                data = memoryview(line.encode("utf-8"))
                while data:
                    data = data[self._file.write(data) :]
        except OSError as e:
            self._disable(e)
            return
        self.written += 1

    def _disable(self, e: OSError) -> None:
        self.disabled = True
        self.error = e
        where = "standard output" if self._file is None else self.path
        if e.errno == errno.ENOSPC:
            why = "the disk is full; free some space or write the log to another disk"
        else:
            why = e.strerror or str(e)
        logger.error(
            "JSONL log disabled: cannot write to %s: %s. Results are no longer logged there; "
            "the camera loop carries on.", where, why,
        )

    def close(self) -> None:
        """Close the file (standard output is left open)."""
        if self._file is not None:
            self._file.close()
