"""Running a sink on a thread of its own, behind a bounded queue."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..frames import Frame, Result
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


class AsyncSink(Sink):
    """Runs another sink's ``write`` on a worker thread behind a bounded queue.

    When the queue is full the oldest waiting result is dropped (and counted), so a slow sink
    (a congested network, a slow SD card) never stalls a camera's inference and always catches
    up with the newest results. With ``lossless`` set (the loop sets it for video files and
    folders read frame by frame, where every result must be recorded) a full queue makes the
    caller wait instead, so the file is processed at the pace of its slowest output. An
    exception in the inner sink is logged with the sink's name and disables it; it never
    reaches the loop. Frames are queued by reference: the caller must not modify them in place
    afterwards. Not for :class:`DisplaySink` (GUI calls belong to one thread).

    The wrapper declares the inner sink's abilities (``needs_annotated``, ``needs_raw_frame``,
    ``quit_requested``, ``address``) as its own and passes ``update_stats`` straight through.

    Attributes:
        sink: the sink it runs.
        dropped: results dropped because the queue was full (or abandoned at close).
        written: results the inner sink wrote.
        lossless: wait for room instead of dropping when the queue is full.
        disabled: True once the inner sink raised.
        error: that exception, else None.
    """

    def __init__(self, sink: Sink, maxsize: int = 8, name: Optional[str] = None) -> None:
        """Start the worker thread.

        Args:
            sink: the sink to run.
            maxsize: results waiting at most; 1 keeps only the newest.
            name: the name used in logs; default the inner sink's class name.

        Raises:
            ConfigError: maxsize below 1.
        """
        if maxsize < 1:
            raise ConfigError(f"AsyncSink maxsize must be at least 1, got {maxsize}")
        self.sink = sink
        self.name = name or type(sink).__name__
        self.maxsize = maxsize
        self.dropped = 0
        self.written = 0
        self.lossless = False
        self.disabled = False
        self.error: Optional[BaseException] = None
        self._queue: Deque[Tuple[Frame, Result, Optional[np.ndarray]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"edgesight-sink-{self.name}", daemon=True)
        self._thread.start()

    @property
    def needs_annotated(self) -> bool:
        """The inner sink's ``needs_annotated``."""
        return self.sink.needs_annotated

    @property
    def needs_raw_frame(self) -> bool:
        """The inner sink's ``needs_raw_frame``."""
        return self.sink.needs_raw_frame

    @property
    def quit_requested(self) -> bool:
        """The inner sink's ``quit_requested``."""
        return self.sink.quit_requested

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        """The inner sink's ``address``."""
        return self.sink.address

    @property
    def inner(self) -> Sink:
        """The sink this one runs."""
        return self.sink.inner

    def update_stats(self, stats: Dict[str, Any]) -> None:
        """Hand the statistics to the inner sink at once, on the caller's thread (they are not
        queued: a sink that shows them must take them thread-safely)."""
        self.sink.update_stats(stats)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Queue the result for the worker; never blocks unless ``lossless`` is set.

        Raises:
            RuntimeError: the sink was closed.
        """
        with self._cond:
            if self._closing:
                raise RuntimeError(f"{self.name} (async) is closed")
            if self.lossless:
                self._cond.wait_for(lambda: len(self._queue) < self.maxsize or self.disabled)
            if self.disabled:
                return
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((frame, result, annotated))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    break
                item = self._queue.popleft()
                self._cond.notify_all()  # room for a lossless writer
            if self.disabled:
                continue
            try:
                self.sink.write(*item)
                self.written += 1
            except Exception as e:  # noqa: BLE001 - any failure of a sink must stay out of the loop
                self.disabled = True
                self.error = e
                logger.error("sink %s failed and is disabled; the camera loop carries on without it: %s",
                             self.name, e, exc_info=e)
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001 - closing runs on the worker; report, don't lose it
            self.error = self.error or e
            logger.error("sink %s failed to close: %s", self.name, e, exc_info=e)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the inner sink (on the worker thread).

        Args:
            timeout: seconds to wait for the queue to drain. After that the remaining results
                are dropped (and counted), a warning is logged, and the inner sink is closed
                as soon as its current write returns.
        """
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                abandoned = len(self._queue)
                self._queue.clear()
                self.dropped += abandoned
            logger.warning(
                "sink %s did not finish within %.1f s; dropped %d queued results; it is closed when "
                "its current write returns", self.name, timeout, abandoned,
            )
