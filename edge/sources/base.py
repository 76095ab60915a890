"""What every frame source shares, and the reader that drives live ones.

A live source (a USB/V4L2 camera, a network stream, picamera2, paced synthetic frames) is a
:class:`CaptureDevice` read by a :class:`LatestFrameReader`: a capture thread keeps only the newest
frame, so a consumer slower than the camera gets fresh frames instead of a growing backlog, and a
failed device is reopened with exponential back-off. Finite sources (video files, image folders)
are read on demand; they share only the counters of :class:`_SourceBase`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple, Optional, Protocol, Tuple

import cv2
import numpy as np

from ..errors import ConfigError, SourceError
from ..frames import Frame

log = logging.getLogger("edgesight.source")


class Grab(NamedTuple):
    """One frame from a capture device.

    Attributes:
        image: the BGR uint8 frame the loop classifies.
        main: a larger image of the same instant for display (picamera2's main stream), or None.
    """

    image: np.ndarray
    main: Optional[np.ndarray] = None


class CaptureDevice(Protocol):
    """A camera or stream driven by :class:`LatestFrameReader`, which opens and reopens it."""

    name: str

    def open(self) -> None:
        """Open (or reopen after a failure) the device; raise SourceError saying the fix if it cannot."""

    def grab(self, stop: threading.Event) -> Optional[Grab]:
        """Block until the next frame and return it, or None when the device failed.

        A device that waits on its own clock (paced synthetic frames) waits on ``stop`` so that
        closing the reader is prompt.
        """

    def close(self) -> None:
        """Release the device; it may be opened again."""


class _SourceBase:
    """Counters every source exposes, so the runtime reports them without knowing the kind.

    Attributes:
        captured: frames the source produced, dropped ones included.
        dropped: frames produced but never returned by ``read()`` (the consumer was slower).
        reconnects: times a failed device was reopened.
        skipped: inputs that could not be decoded (unreadable images).
    """

    live: bool = False
    captured: int = 0
    dropped: int = 0
    reconnects: int = 0
    skipped: int = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_positive(name: str, value: Optional[float], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as 3-channel BGR: grayscale is expanded, an alpha channel dropped.

    Args:
        image: ``HxW``, ``HxWx1``, ``HxWx3`` (BGR) or ``HxWx4`` (BGRA) uint8 array.

    Returns:
        An ``HxWx3`` BGR array (``image`` itself when it already is one).
    """
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _pause(seconds: float) -> None:
    """Sleep between open attempts on the caller's thread (Ctrl-C interrupts it)."""
    time.sleep(seconds)


class LatestFrameReader(_SourceBase):
    """A live source: a capture thread keeps only the newest frame of a :class:`CaptureDevice`.

    The one-slot buffer is guarded by a condition variable. ``read()`` blocks until a frame newer
    than the one it last returned arrives and returns it; a frame replaced before anyone read it
    is counted in ``dropped``. Latency therefore stays at about one frame period however slow the
    consumer is. ``Frame.index`` counts every captured frame, so gaps show the drops.

    A device that cannot be opened at start (a camera not ready at boot, a stream server
    restarting) is retried for up to ``open_timeout`` seconds with the same back-off; one line is
    logged when the wait starts, and the open error, with the time waited, is raised when it ends.

    When the device fails (a read returns nothing, a USB camera is unplugged, a stream drops) it is
    closed and reopened after ``reconnect_delay`` seconds, the delay doubling up to
    ``reconnect_max_delay`` until an attempt succeeds; each success increments ``reconnects``.

    Args:
        device: the camera or stream. It is opened here, so a missing camera fails at once
            unless ``open_timeout`` allows a wait.
        reconnect: reopen the device after a failure; when False the source ends instead.
        reconnect_delay: seconds before the first reopen attempt.
        reconnect_max_delay: the longest wait between attempts.
        read_timeout: seconds ``read()`` waits for a new frame before raising SourceError; short
            outages are ridden out by reconnecting, a longer one stops the loop with a clear error
            (None waits indefinitely).
        close_timeout: seconds ``close()`` waits for the capture thread.
        open_timeout: seconds to keep retrying the first open (0: fail at the first attempt).

    Raises:
        SourceError: the device cannot be opened (within ``open_timeout``).
        KeyboardInterrupt: Ctrl-C while waiting for the device; nothing is left open.
        ConfigError: a delay or timeout is not positive.
    """

    live = True

    def __init__(
        self,
        device: CaptureDevice,
        *,
        reconnect: bool = True,
        reconnect_delay: float = 0.5,
        reconnect_max_delay: float = 10.0,
        read_timeout: Optional[float] = 30.0,
        close_timeout: float = 1.0,
        open_timeout: float = 0.0,
    ) -> None:
        _check_positive("reconnect_delay", reconnect_delay)
        _check_positive("reconnect_max_delay", reconnect_max_delay)
        _check_positive("read_timeout", read_timeout, allow_none=True)
        _check_positive("close_timeout", close_timeout)
        if open_timeout is None or not open_timeout >= 0:
            raise ConfigError(f"open_timeout must be 0 or a positive number, got {open_timeout!r}")
        self.name = device.name
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0
        self.last_main: Optional[np.ndarray] = None
        self._device = device
        self._reconnect = reconnect
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = max(reconnect_delay, reconnect_max_delay)
        self._read_timeout = read_timeout
        self._close_timeout = close_timeout
        self._cond = threading.Condition(threading.Lock())
        self._slot: Optional[Tuple[Frame, Optional[np.ndarray]]] = None
        self._ended = False
        self._closed = False
        self._stop = threading.Event()
        self._open_first(open_timeout)
        self._thread = threading.Thread(target=self._run, name=f"edgesight-capture {self.name}", daemon=True)
        self._thread.start()

    def _open_first(self, timeout: float) -> None:
        """Open the device, retrying with exponential back-off for up to ``timeout`` seconds."""
        start = time.monotonic()
        delay = self._reconnect_delay
        attempts = 0
        while True:
            attempts += 1
            try:
                self._device.open()
                break
            except SourceError as exc:
                waited = time.monotonic() - start
                if waited + 1e-9 >= timeout:
                    if attempts == 1:
                        raise
                    raise SourceError(f"{exc} (waited {waited:.1f} s, {attempts} attempts)") from exc
                if attempts == 1:
                    log.warning("waiting for %s to open, up to %g s", self.name, timeout)
                pause = min(delay, timeout - waited)
                log.info("%s: open attempt %d failed; next in %.1f s", self.name, attempts, pause)
                _pause(pause)
                delay = min(delay * 2, self._reconnect_max_delay)
        if attempts > 1:
            log.warning("%s: opened after %d attempt(s) in %.1f s", self.name, attempts, time.monotonic() - start)

    def read(self) -> Optional[Frame]:
        """Return the newest frame not yet returned, waiting for one if needed.

        Returns:
            The frame, or None once the source is closed or has ended (device failed with
            reconnect off). ``last_main`` is set to the display image captured with it, if any.

        Raises:
            SourceError: no new frame arrived within ``read_timeout`` seconds.
        """
        deadline = None if self._read_timeout is None else time.monotonic() + self._read_timeout
        with self._cond:
            while self._slot is None:
                if self._closed or self._ended:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SourceError(
                        f"no frame from {self.name} for {self._read_timeout:g} s "
                        f"({self.reconnects} reconnects so far): check the camera cable or the "
                        "stream's network, or allow longer with read_timeout"
                    )
                self._cond.wait(remaining)
            if self._closed:
                return None
            frame, self.last_main = self._slot
            self._slot = None
            return frame

    def close(self) -> None:
        """Stop the capture thread and release the device (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        self._thread.join(self._close_timeout)
        if self._thread.is_alive():
            log.warning(
                "%s: capture thread still blocked in the driver after %.1f s; the device is released "
                "when that call returns",
                self.name,
                self._close_timeout,
            )

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                grabbed = self._grab_once()
                if self._stop.is_set():
                    break
                if grabbed is None:
                    if not self._recover():
                        break
                    continue
                self._publish(grabbed)
        finally:
            # The thread owns the device: releasing it from close() while a driver call is in
            # flight on this thread is unsafe for OpenCV.
            self._close_device()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _grab_once(self) -> Optional[Grab]:
        try:
            return self._device.grab(self._stop)
        except Exception as exc:  # a driver error is a capture failure: reconnect, don't kill the thread
            log.warning("%s: capture failed: %s: %s", self.name, type(exc).__name__, exc)
            log.debug("%s: capture failure traceback", self.name, exc_info=True)
            return None

    def _publish(self, grabbed: Grab) -> None:
        timestamp, wall_time = time.monotonic(), time.time()
        with self._cond:
            frame = Frame(image=grabbed.image, index=self.captured, timestamp=timestamp, wall_time=wall_time)
            if self._slot is not None:
                self.dropped += 1
            self._slot = (frame, grabbed.main)
            self.captured += 1
            self._cond.notify_all()

    def _close_device(self) -> None:
        try:
            self._device.close()
        except Exception as exc:  # releasing a vanished device can fail; the reader must go on
            log.warning("%s: error while releasing the device: %s: %s", self.name, type(exc).__name__, exc)

    def _recover(self) -> bool:
        """Reopen the device with exponential back-off; False when the reader should stop instead."""
        self._close_device()
        if not self._reconnect:
            log.warning("%s: capture failed and reconnect is off; the source has ended", self.name)
            return False
        delay = self._reconnect_delay
        attempt = 0
        log.warning("%s: capture failed; reconnecting (first attempt in %.1f s)", self.name, delay)
        while not self._stop.wait(delay):
            attempt += 1
            try:
                self._device.open()
            except Exception as exc:  # every failed attempt is logged and retried after a longer wait
                delay = min(delay * 2, self._reconnect_max_delay)
                log.info("%s: reconnect attempt %d failed (%s); next in %.1f s", self.name, attempt, exc, delay)
                continue
            self.reconnects += 1
            log.warning("%s: reconnected after %d attempt(s)", self.name, attempt)
            return True
        return False
