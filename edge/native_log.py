"""What native code writes straight to the terminal, kept out of the normal output.

TensorFlow prints absl, oneDNN and CPU-feature banners from C++ when it is imported (TensorFlow
2.16+ prints them whatever ``TF_CPP_MIN_LOG_LEVEL`` says), LiteRT prints "Created TensorFlow Lite
XNNPACK delegate for CPU." when an interpreter is built, and the converter and Keras' export
print pages of detail. C and C++ write to file descriptors 1 and 2 directly, so replacing
``sys.stderr`` does not catch them. :func:`native_output` points the descriptor itself at a
temporary file around one such call, then logs what was written through the
``edgesight.native`` logger: at DEBUG when the call succeeded (``edgesight -v`` shows it), at
ERROR when it raised, since the text may be the only explanation of the error.

While a capture is active, everything written to the descriptor goes to the file, from any
thread, so captures wrap single calls only. They nest (the outermost one holds the text) and
one thread captures at a time.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, TextIO, Tuple

log = logging.getLogger("edgesight.native")

_lock = threading.RLock()
_active: Optional["NativeOutput"] = None

# absl/glog line prefix ("I0000 00:00:1796029121.774629    8235 "): TensorFlow's shared libraries
# each print the same import banner with their own timestamp; a log message is replayed once.
_LOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")
_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ |(?:INFO|WARNING|ERROR): )")


class NativeOutput:
    """One capture.

    Attributes:
        what: what was running, prefixed to every replayed line.
        stream: a text stream on the real stderr while capturing (for progress bars).
        text: everything written to the captured descriptors, available after the block
            (empty for a block nested in another capture: the outer one holds it).
    """

    def __init__(self, what: str, stream: TextIO) -> None:
        self.what = what
        self.stream = stream
        self.text = ""


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:  # no C library handle on this platform: C stdio buffers stay as they are
        return None


def _flush() -> None:
    """Flush Python's and C's stdio buffers, so nothing crosses the start or end of a capture."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    libc = _libc()
    if libc is not None:
        try:
            libc.fflush(None)
        except (AttributeError, OSError):
            pass


def _lines(text: str) -> List[str]:
    seen = set()
    lines = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line.strip():
            continue
        if _LOG_LINE.match(line):
            key = _LOG_PREFIX.sub("", line)
            if key in seen:
                continue
            seen.add(key)
        lines.append(line)
    return lines


def replay(what: str, text: str, level: int = logging.DEBUG) -> None:
    """Log captured ``text`` line by line as ``[what] line``, each log message once."""
    for line in _lines(text):
        log.log(level, "[%s] %s", what, line)


@contextmanager
def native_output(what: str, stdout: bool = False) -> Iterator[NativeOutput]:
    """Capture file descriptor 2 (and 1 with ``stdout``) around a native call.

    Args:
        what: what runs inside, e.g. ``"importing TensorFlow"``; it prefixes the replayed lines.
        stdout: capture standard output too (the converter and Keras' export print there).

    Yields:
        A :class:`NativeOutput`; its ``text`` is filled when the block ends. The text is logged
        at DEBUG, or at ERROR if the block raised.
    """
    global _active
    with _lock:
        if _active is not None:
            yield NativeOutput(what, _active.stream)
            return
        _flush()
        held = _start((1, 2) if stdout else (2,))
        if held is None:
            yield NativeOutput(what, sys.stderr)
            return
        saved, tmp, stream = held
        out = NativeOutput(what, stream)
        failed = True
        try:
            _active = out
            yield out
            failed = False
        finally:
            _active = None
            _flush()
            for fd, dup in saved.items():
                os.dup2(dup, fd)
                os.close(dup)
            stream.close()
            tmp.seek(0)
            out.text = tmp.read().decode("utf-8", "replace")
            tmp.close()
            # A failed call's output may be the only explanation of the error: never hide it.
            replay(what, out.text, logging.ERROR if failed else logging.DEBUG)


def _start(fds: Tuple[int, ...]):
    """Point ``fds`` at a new temporary file: ``(saved duplicates, file, stream on the real stderr)``,
    or None where that is impossible (a closed descriptor, no writable temporary folder): the
    call then runs uncaptured rather than not at all."""
    saved: Dict[int, int] = {}
    tmp = stream = None
    try:
        for fd in fds:
            saved[fd] = os.dup(fd)
        tmp = tempfile.TemporaryFile()
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        stream = os.fdopen(os.dup(saved[2]), "w", encoding=encoding, errors="replace")
        for fd in fds:
            os.dup2(tmp.fileno(), fd)
    except OSError:
        for fd, dup in saved.items():
            try:
                os.dup2(dup, fd)
            finally:
                os.close(dup)
        for f in (tmp, stream):
            if f is not None:
                f.close()
        return None
    return saved, tmp, stream
