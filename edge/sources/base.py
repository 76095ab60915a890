"""Frame sources for the camera loop: cameras, streams, video files, image folders, synthetic frames.

``open_source(spec)`` turns the ``--source`` string into a :class:`~edgesight.edge.frames.FrameSource`.
Live sources (USB/V4L2 cameras, network streams, picamera2, paced synthetic frames) are read by a
:class:`LatestFrameReader`: a capture thread keeps only the newest frame, so a consumer slower
than the camera gets fresh frames instead of a growing backlog, and a failed device is reopened
with exponential back-off. Finite sources (video files, image folders) are read on demand.

OpenCV is the camera library of this module; picamera2 lives in ``edge/camera_picamera2.py``.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import queue
import re
import sys
import threading
import time
from typing import Callable, List, NamedTuple, Optional, Protocol, Sequence, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from ..errors import ConfigError, SourceError
from ..frames import Frame, FrameSource

log = logging.getLogger("edgesight.source")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

SPEC_HELP = (
    "a camera index (0), /dev/videoN, an rtsp:// or http(s):// URL, a video file, an image folder "
    "or glob, picamera2[:WxH] or synthetic[:FPS | :WxH@FPS]"
)

# Stream reads that hang (a camera that went away mid-frame) must fail so the reader can reconnect.
DEFAULT_STREAM_TIMEOUT_S = 10.0
# Used only to pace realtime playback of a file whose header carries no frame rate.
FALLBACK_VIDEO_FPS = 30.0


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


class LatestFrameReader(_SourceBase):
    """A live source: a capture thread keeps only the newest frame of a :class:`CaptureDevice`.

    The one-slot buffer is guarded by a condition variable. ``read()`` blocks until a frame newer
    than the one it last returned arrives and returns it; a frame replaced before anyone read it
    is counted in ``dropped``. Latency therefore stays at about one frame period however slow the
    consumer is. ``Frame.index`` counts every captured frame, so gaps show the drops.

    When the device fails (a read returns nothing, a USB camera is unplugged, a stream drops) it is
    closed and reopened after ``reconnect_delay`` seconds, the delay doubling up to
    ``reconnect_max_delay`` until an attempt succeeds; each success increments ``reconnects``.

    Args:
        device: the camera or stream. It is opened here, so a missing camera fails at once.
        reconnect: reopen the device after a failure; when False the source ends instead.
        reconnect_delay: seconds before the first reopen attempt.
        reconnect_max_delay: the longest wait between attempts.
        read_timeout: seconds ``read()`` waits for a new frame before raising SourceError; short
            outages are ridden out by reconnecting, a longer one stops the loop with a clear error
            (None waits indefinitely).
        close_timeout: seconds ``close()`` waits for the capture thread.

    Raises:
        SourceError: the device cannot be opened.
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
    ) -> None:
        _check_positive("reconnect_delay", reconnect_delay)
        _check_positive("reconnect_max_delay", reconnect_max_delay)
        _check_positive("read_timeout", read_timeout, allow_none=True)
        _check_positive("close_timeout", close_timeout)
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
        device.open()
        self._thread = threading.Thread(target=self._run, name=f"edgesight-capture {self.name}", daemon=True)
        self._thread.start()

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


# --------------------------------------------------------------------------- OpenCV cameras and streams


def _open_capture(target: Union[int, str], api: int, params: Sequence[int] = ()) -> "cv2.VideoCapture":
    """Create a ``cv2.VideoCapture``: the single place OpenCV opens a device, stream or file.

    Tests replace this function with one returning a fake capture.

    Args:
        target: camera index, device path, URL or file path.
        api: OpenCV backend preference (``cv2.CAP_V4L2``, ``cv2.CAP_FFMPEG``, ``cv2.CAP_ANY``).
        params: flat ``[prop, value, ...]`` list applied while opening (timeouts must be set here).

    Returns:
        The capture object; check ``isOpened()``.
    """
    return cv2.VideoCapture(target, api, list(params))


def redact_url(url: str) -> str:
    """Hide the password in a URL so logs and error messages never show it.

    Args:
        url: e.g. ``rtsp://admin:secret@10.0.0.5/stream1``.

    Returns:
        The URL with the password replaced by ``***``; unchanged when it has none.
    """
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _is_device(target: Union[int, str]) -> bool:
    return isinstance(target, int) or target.startswith("/dev/")


class _OpenCVDevice:
    """A USB/V4L2 camera or a network stream opened through OpenCV."""

    def __init__(
        self,
        target: Union[int, str],
        width: Optional[int],
        height: Optional[int],
        fps: Optional[float],
        stream_timeout: float,
    ) -> None:
        self.target = target
        if _is_device(target):
            # CAP_ANY may pick GStreamer on Linux, which ignores BUFFERSIZE and adds latency.
            self.api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            self.params: Tuple[int, ...] = ()
            self.name = f"camera {target}"
        else:
            self.api = cv2.CAP_FFMPEG
            ms = int(stream_timeout * 1000)
            self.params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms)
            self.name = f"stream {redact_url(str(target))}"
        self.width, self.height, self.fps = width, height, fps
        self._cap = None

    def open(self) -> None:
        cap = _open_capture(self.target, self.api, self.params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure())
        # OpenCV's V4L2 backend queues several buffers by default, which serves stale frames.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        log.info(
            "opened %s: %dx%d at %.1f FPS",
            self.name,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
        )
        self._cap = cap

    def _open_failure(self) -> str:
        if isinstance(self.target, str) and self.target.startswith("/dev/") and not os.path.exists(self.target):
            return f"camera device {self.target} does not exist: list cameras with `v4l2-ctl --list-devices`"
        if _is_device(self.target):
            return (
                f"cannot open {self.name}: check it is plugged in (`v4l2-ctl --list-devices`), not in use "
                "by another program, and that your user is in the 'video' group"
            )
        return (
            f"cannot open {self.name}: check the URL, credentials and network "
            f"(try `ffprobe '{redact_url(str(self.target))}'`)"
        )

    def grab(self, stop: threading.Event) -> Optional[Grab]:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return Grab(to_bgr(image))

    def close(self) -> None:
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class OpenCVSource(LatestFrameReader):
    """A USB/V4L2 camera or a network stream (RTSP, HTTP, ...) read through OpenCV.

    Cameras use the V4L2 backend on Linux; URLs use FFmpeg with open and read timeouts, so a stream
    that stalls fails and is reconnected. For RTSP over TCP set the environment variable
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp`` before starting. Passwords in URLs are
    redacted from logs and errors.

    Args:
        target: camera index (``0``), device path (``/dev/video0``, ``/dev/v4l/by-id/...``) or URL.
        width, height, fps: requested capture format; the camera may choose the nearest it supports
            (the format obtained is logged).
        stream_timeout: seconds FFmpeg waits to open or read a stream before failing.
        **reader: :class:`LatestFrameReader` options (reconnect, reconnect_delay, ...).

    Raises:
        SourceError: the camera or stream cannot be opened; the message says what to check.
    """

    def __init__(
        self,
        target: Union[int, str],
        *,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT_S,
        **reader,
    ) -> None:
        _check_positive("stream_timeout", stream_timeout)
        super().__init__(_OpenCVDevice(target, width, height, fps, stream_timeout), **reader)


# --------------------------------------------------------------------------- video files


SINGLE_THREAD_DECODE_PIXELS = 1280 * 720


class VideoFileSource(_SourceBase):
    """Frames of a video file, decoded on demand (a finite source).

    By default every frame is returned, as fast as the consumer reads them. With
    ``realtime=True`` playback follows the file's frame rate as a camera would: a fast consumer is
    slowed to that rate, and frames whose time has passed while the consumer was busy are skipped
    and counted in ``dropped``.

    Args:
        path: the video file.
        realtime: pace by the file's FPS and drop frames the consumer falls behind on.
        loop: start again at the end instead of ending (``Frame.index`` keeps counting).

    Attributes:
        fps: the file's frame rate (30 when the file does not say).
        frame_count: frames in the file as its header reports (0 when unknown).

    Raises:
        SourceError: the file is missing or cannot be decoded.
    """

    live = False

    def __init__(self, path: str, *, realtime: bool = False, loop: bool = False) -> None:
        if not os.path.isfile(path):
            raise SourceError(f"video file {path} not found: check the path")
        self.path = path
        self.realtime = realtime
        self.loop = loop
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0
        self._cap = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not fps or not np.isfinite(fps) or fps <= 0:
            if realtime:
                log.warning("%s has no frame rate in its header; pacing at %g FPS", path, FALLBACK_VIDEO_FPS)
            fps = FALLBACK_VIDEO_FPS
        self.fps = float(fps)
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._index = 0
        self._frames_this_pass = 0
        self._start: Optional[float] = None

    def _open(self):
        cap = _open_capture(self.path, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot decode video {self.path}: the file is damaged or uses a codec this OpenCV lacks; "
                f"re-encode it with `ffmpeg -i {self.path} -c:v libx264 out.mp4`"
            )
        return self._single_thread_decoder(cap)

    def _single_thread_decoder(self, cap):
        """Reopen an FFmpeg capture of frames up to 720p with one decoder thread.

        FFmpeg's default frame threading costs about a third more CPU per frame at these sizes
        (0.76 vs 0.57 ms for 640x480 MPEG-4 here), CPU the interpreter needs; larger frames keep
        the threads, which they need to decode in time.
        """
        try:
            small = cap.get(cv2.CAP_PROP_FRAME_WIDTH) * cap.get(cv2.CAP_PROP_FRAME_HEIGHT) <= SINGLE_THREAD_DECODE_PIXELS
            ffmpeg = getattr(cap, "getBackendName", lambda: "")() == "FFMPEG"
        except cv2.error:
            return cap
        if not (small and ffmpeg):
            return cap
        single = _open_capture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not single.isOpened():
            single.release()
            return cap
        cap.release()
        return single

    def _advance(self, decode: bool) -> Tuple[bool, Optional[np.ndarray]]:
        """Move to the next frame, decoding it only when ``decode``; ``(False, None)`` at the end.

        With ``loop`` the end rewinds to the first frame (unless the file yielded none).
        """
        for _ in range(2):
            ok, image = self._cap.read() if decode else (self._cap.grab(), None)
            if ok:
                self._frames_this_pass += 1
                return True, image
            if not self.loop or self._frames_this_pass == 0:
                return False, None
            # Reopening is the reliable rewind: seeking to frame 0 is inexact for some containers.
            self._cap.release()
            self._cap = self._open()
            self._frames_this_pass = 0
        return False, None

    def read(self) -> Optional[Frame]:
        """Return the next frame, or None at the end of the file (never, with ``loop``).

        Returns:
            The frame; ``index`` counts frames from the start, skipped ones included.
        """
        if self._cap is None:
            return None
        if self.realtime and not self._catch_up():
            return None
        ok, image = self._advance(decode=True)
        if not ok:
            return None
        frame = Frame(image=to_bgr(image), index=self._index, timestamp=time.monotonic(), wall_time=time.time())
        self._index += 1
        self.captured += 1
        return frame

    def _catch_up(self) -> bool:
        """Wait for the next frame's time, or skip frames whose time has passed; False at the end."""
        now = time.monotonic()
        if self._start is None:
            self._start = now - self._index / self.fps
        due_index = int((now - self._start) * self.fps)
        if due_index <= self._index:
            time.sleep(max(0.0, self._start + self._index / self.fps - now))
            return True
        for _ in range(due_index - self._index):
            if not self._advance(decode=False)[0]:
                return False
            self._index += 1
            self.captured += 1
            self.dropped += 1
        return True

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._cap is not None:
            cap, self._cap = self._cap, None
            cap.release()


class DecodeAhead:
    """Decodes the next frames of a finite source on a worker thread while the caller runs
    inference on the current one, so decoding and inference overlap instead of adding up.

    Every frame is still delivered, in order (a bounded queue of ``depth`` frames: the decoder
    waits when the consumer is slower). Counters are read through from the wrapped source.
    Once the consumer sets :attr:`prepare` (``image -> model input``), the worker also makes
    each frame's ``pixels``, taking the resize off the inference thread too.

    Args:
        source: a finite source (video file or image folder read every frame).
        depth: frames decoded ahead.
    """

    def __init__(self, source, depth: int = 4) -> None:
        self.source = source
        self.live = False
        self.prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None
        # Two C-level queues instead of one bounded queue.Queue: the frames, and one token per
        # free slot; each hand-over is then a single C call on each side.
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._slots: "queue.SimpleQueue" = queue.SimpleQueue()
        for _ in range(max(1, depth)):
            self._slots.put(None)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._done = False
        self._thread = threading.Thread(target=self._work, name="edgesight-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Wait for a free slot, then queue ``item``; False when closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._slots.get(timeout=0.1)
            except queue.Empty:
                continue
            self._queue.put(item)
            return True
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                prepare = self.prepare
                if frame is not None and prepare is not None:
                    frame = dataclasses.replace(frame, pixels=prepare(frame.image))
                if not self._put(frame) or frame is None:
                    return
        except BaseException as e:  # handed to the consumer's thread by read()
            self._error = e
            self._put(None)

    def read(self) -> Optional[Frame]:
        if self._done:
            return None
        frame = self._queue.get()
        self._slots.put(None)
        if frame is None:
            self._done = True
            if self._error is not None:
                raise self._error
        return frame

    def __getattr__(self, name):
        # captured, dropped, skipped, fps, path...: whatever the wrapped source reports.
        return getattr(self.source, name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- image folders


def list_images(location: str) -> List[str]:
    """The image files of a folder, glob pattern or single image, sorted by path.

    Args:
        location: a folder (its direct children are listed), a glob pattern (``**`` recurses) or
            one image file. Extensions are matched in any case: jpg, jpeg, png, bmp, webp, tif, tiff.

    Returns:
        Sorted paths.

    Raises:
        SourceError: nothing there, or no images in it.
    """
    kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    if os.path.isdir(location):
        candidates = [os.path.join(location, n) for n in os.listdir(location)]
        where = f"folder {location}"
    elif os.path.isfile(location):
        candidates = [location]
        where = f"file {location}"
    elif any(c in location for c in "*?["):
        candidates = glob.glob(location, recursive=True)
        where = f"glob pattern {location}"
        if not candidates:
            raise SourceError(f"glob pattern {location} matches no files: check the pattern (quote it in the shell)")
    else:
        raise SourceError(f"image folder {location} not found: check the path")
    images = sorted(
        p for p in candidates if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(p)
    )
    if not images:
        raise SourceError(f"no images in {where}: expected files ending in {kinds}")
    return images


class ImageFolderSource(_SourceBase):
    """Images of a folder, a glob pattern or one file, in sorted order (a finite source).

    Images that cannot be decoded are skipped with a warning and counted in ``skipped``; their
    position still advances ``Frame.index``, so gaps show where they were. ``Frame.path`` names
    the file each frame came from.

    Args:
        location: folder, glob pattern or image file (see :func:`list_images`).
        loop: start again after the last image instead of ending.

    Raises:
        SourceError: no images found.
    """

    live = False

    def __init__(self, location: str, *, loop: bool = False) -> None:
        self.location = location
        self.paths = list_images(location)
        self.loop = loop
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.skipped = 0
        self._position = 0
        self._unreadable: set = set()
        self._closed = False

    def read(self) -> Optional[Frame]:
        """Return the next readable image, or None after the last one (with ``loop``: only when
        none is readable).

        Returns:
            The frame, with ``path`` set.
        """
        n = len(self.paths)
        while not self._closed and len(self._unreadable) < n:
            if self._position >= n and not self.loop:
                return None
            index = self._position
            path = self.paths[index % n]
            self._position += 1
            if path in self._unreadable:
                continue  # already warned about and counted on an earlier pass
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                self.skipped += 1
                self._unreadable.add(path)
                log.warning("skipping %s: not a readable image (corrupt or unsupported)", path)
                continue
            self.captured += 1
            return Frame(image=image, index=index, timestamp=time.monotonic(), wall_time=time.time(), path=path)
        if len(self._unreadable) >= n and not self._closed:
            log.warning("no readable image in %s; the source has ended", self.location)
            self._closed = True
        return None

    def close(self) -> None:
        """End the source; later reads return None."""
        self._closed = True


# --------------------------------------------------------------------------- synthetic frames


class SyntheticPattern:
    """Deterministic test frames: a gradient, a moving block and the frame index drawn on them.

    Args:
        width, height: frame size in pixels (at least 16 each).
    """

    def __init__(self, width: int, height: int) -> None:
        if width < 16 or height < 16:
            raise ConfigError(f"synthetic frames must be at least 16x16, got {width}x{height}")
        self.width, self.height = width, height
        xs = np.linspace(0, 255, width, dtype=np.float32)
        ys = np.linspace(0, 255, height, dtype=np.float32)
        self._base = np.empty((height, width, 3), np.uint8)
        self._base[..., 0] = xs[None, :]
        self._base[..., 1] = ys[:, None]
        self._base[..., 2] = 96
        self._block = max(4, min(width, height) // 4)
        self._scale = max(0.35, height / 480.0 * 1.2)
        self._thickness = max(1, round(height / 240))

    def render(self, index: int) -> np.ndarray:
        """Draw frame ``index``; the same index always gives the same image.

        Args:
            index: frame number.

        Returns:
            A new ``height x width x 3`` BGR uint8 image.
        """
        image = self._base.copy()
        s = self._block
        span_x, span_y = self.width - s, self.height - s
        x = (index * 4) % (2 * span_x)
        x = x if x <= span_x else 2 * span_x - x
        y = (index * 3) % (2 * span_y)
        y = y if y <= span_y else 2 * span_y - y
        colour = ((index * 37) % 256, (index * 91) % 256, 255 - (index * 53) % 256)
        cv2.rectangle(image, (x, y), (x + s - 1, y + s - 1), colour, thickness=-1)
        org = (4, 4 + int(22 * self._scale))
        text = str(index)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, self._scale, (0, 0, 0), self._thickness + 2, cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, self._scale, (255, 255, 255), self._thickness, cv2.LINE_AA)
        return image


class _PacedSynthetic:
    """Synthetic frames on a fixed clock, behaving like a camera for :class:`LatestFrameReader`."""

    def __init__(self, pattern: SyntheticPattern, fps: float) -> None:
        self.pattern = pattern
        self.period = 1.0 / fps
        self.name = f"synthetic {pattern.width}x{pattern.height}@{fps:g}"
        self._index = 0
        self._next_due: Optional[float] = None

    def open(self) -> None:
        self._next_due = time.monotonic()

    def grab(self, stop: threading.Event) -> Optional[Grab]:
        if self._next_due is None:
            return None
        now = time.monotonic()
        if self._next_due > now and stop.wait(self._next_due - now):
            return None
        now = time.monotonic()
        self._next_due += self.period
        if self._next_due <= now:
            # More than a period late (a starved thread): a camera skips the missed ticks rather
            # than delivering them in a burst, so restart the clock from now.
            self._next_due = now + self.period
        image = self.pattern.render(self._index)
        self._index += 1
        return Grab(image)

    def close(self) -> None:
        self._next_due = None


class SyntheticSource(_SourceBase):
    """Generated frames for demos, benchmarks and tests; no camera needed.

    With ``live=True`` frames are produced at ``fps`` in real time by a capture thread whether or
    not anyone reads them, with the :class:`LatestFrameReader` semantics of a camera (drops counted
    when the consumer is slower). With ``live=False`` each ``read()`` renders the next frame at
    once, up to ``count`` frames.

    Frame ``i`` is always :meth:`render` ``(i)``: the pattern is deterministic.

    Args:
        width, height: frame size.
        fps: frame rate of the live clock.
        live: pace in real time in a capture thread.
        count: frames before the source ends (unpaced mode only; None = endless).
        **reader: :class:`LatestFrameReader` options for live mode.

    Raises:
        ConfigError: non-positive fps or count, frames smaller than 16x16, or count with live.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        live: bool = False,
        count: Optional[int] = None,
        **reader,
    ) -> None:
        _check_positive("fps", fps)
        if count is not None and count < 0:
            raise ConfigError(f"count must be 0 or more, got {count}")
        if live and count is not None:
            raise ConfigError("count applies to unpaced synthetic frames only; drop it or use live=False")
        self.width, self.height, self.fps = width, height, float(fps)
        self.live = live
        self.count = count
        self._pattern = SyntheticPattern(width, height)
        self._reader = LatestFrameReader(_PacedSynthetic(self._pattern, fps), **reader) if live else None
        self._captured = 0
        self._closed = False

    def render(self, index: int) -> np.ndarray:
        """The image of frame ``index`` (see :meth:`SyntheticPattern.render`)."""
        return self._pattern.render(index)

    @property
    def captured(self) -> int:  # type: ignore[override]
        return self._reader.captured if self._reader else self._captured

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self._reader.dropped if self._reader else 0

    def read(self) -> Optional[Frame]:
        """Return the next frame (live: the newest one), or None after ``count`` frames or close.

        Raises:
            SourceError: live mode only, when no frame arrives within the reader's read_timeout.
        """
        if self._reader is not None:
            return self._reader.read()
        if self._closed or (self.count is not None and self._captured >= self.count):
            return None
        index = self._captured
        self._captured += 1
        return Frame(image=self._pattern.render(index), index=index, timestamp=time.monotonic(), wall_time=time.time())

    def close(self) -> None:
        """Stop the clock thread (live mode); later reads return None."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()


# --------------------------------------------------------------------------- --source parsing

_SIZE = re.compile(r"^(\d+)[xX](\d+)$")


def parse_size(text: str, spec: str) -> Tuple[int, int]:
    """Parse ``WxH`` (e.g. ``640x480``).

    Args:
        text: the size text.
        spec: the whole ``--source`` value, for the error message.

    Returns:
        ``(width, height)``.

    Raises:
        SourceError: not two positive integers joined by ``x``.
    """
    m = _SIZE.match(text)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise SourceError(f"bad size '{text}' in source '{spec}': write WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


def _parse_fps(text: str, spec: str) -> float:
    try:
        fps = float(text)
    except ValueError:
        fps = 0.0
    if not fps > 0 or not np.isfinite(fps):
        raise SourceError(f"bad frame rate '{text}' in source '{spec}': write a positive number, e.g. synthetic:30")
    return fps


def _parse_synthetic(arg: str, spec: str) -> Tuple[Optional[Tuple[int, int]], Optional[float]]:
    if not arg:
        return None, None
    if "x" in arg.lower():
        size_text, at, fps_text = arg.partition("@")
        return parse_size(size_text, spec), (_parse_fps(fps_text, spec) if at else None)
    return None, _parse_fps(arg.lstrip("@"), spec)


def auto_prefetch(compute_threads: Optional[int], cores: Optional[int] = None) -> int:
    """Frames to decode ahead for a consumer running ``compute_threads`` interpreter threads.

    With one interpreter thread and a core left over, decoding on a worker thread overlaps with
    inference. With two or more threads the camera loop classifies frames of a file in parallel
    (one interpreter per thread, see :func:`~edgesight.edge.loop.runner.frame_workers`), and a decoder thread
    keeps those workers fed while the loop thread reports results. Only a single core with a
    single thread decodes on the caller's thread. ``None`` threads means the interpreter's
    default of one.
    """
    cores = cores or os.cpu_count() or 1
    threads = max(1, compute_threads or 1)
    return 4 if cores > threads or threads >= 2 else 0


def open_source(
    spec: str,
    *,
    width: Optional[int] = None,
    height: Optional[int] = None,
    fps: Optional[float] = None,
    realtime: bool = False,
    loop: bool = False,
    reconnect: bool = True,
    count: Optional[int] = None,
    reconnect_delay: float = 0.5,
    reconnect_max_delay: float = 10.0,
    read_timeout: Optional[float] = 30.0,
    prefetch: Optional[int] = None,
    compute_threads: Optional[int] = None,
) -> FrameSource:
    """Open the frame source a ``--source`` value names.

    Accepted values:

    * ``0``, ``1``, ...: a camera index; ``/dev/video0`` or ``/dev/v4l/by-id/...``: a V4L2 device
      (OpenCV, ``CAP_V4L2`` on Linux).
    * ``rtsp://``, ``rtsps://``, ``http://``, ``https://`` (also rtmp, udp, tcp, srt): a network
      stream through OpenCV/FFmpeg.
    * a video file (mp4, avi, mkv, mov, webm, ...), an image folder, a glob pattern such as
      ``'shots/**/*.jpg'``, or a single image.
    * ``picamera2`` or ``picamera2:WxH``: the Raspberry Pi camera; WxH is the size of the frames
      classified (the lores stream).
    * ``synthetic``, ``synthetic:FPS``, ``synthetic:WxH`` or ``synthetic:WxH@FPS``: generated frames
      paced like a camera (640x480 at 30 FPS unless given).

    Args:
        spec: the value.
        width, height: requested frame size for cameras, picamera2 and synthetic frames (a size in
            the spec wins); video files and images keep their own size.
        fps: requested frame rate for cameras, picamera2 and synthetic frames (the spec's wins).
        realtime: play a video file at its own frame rate, dropping frames the loop falls behind on.
        loop: restart video files and image folders at the end.
        reconnect: reopen live sources after a failure (with exponential back-off).
        count: for synthetic frames: generate this many, unpaced, then end (for benchmarks).
        reconnect_delay, reconnect_max_delay: back-off of live sources, in seconds.
        read_timeout: seconds a live source may go without a frame before read() raises.
        prefetch: frames of a video file or image folder decoded ahead on a worker thread
            (0: decode on the caller's thread; None: :func:`auto_prefetch` decides).
        compute_threads: interpreter threads of the consumer, for ``prefetch=None``.

    Returns:
        The source; use it as a context manager or call ``close()``.

    Raises:
        SourceError: the value names nothing usable; the message says what was expected.
        MissingDependencyError: picamera2 requested but not installed.
    """
    text = spec.strip()
    if not text:
        raise SourceError(f"empty --source: give {SPEC_HELP}")
    reader = dict(
        reconnect=reconnect,
        reconnect_delay=reconnect_delay,
        reconnect_max_delay=reconnect_max_delay,
        read_timeout=read_timeout,
    )
    kind, sep, arg = text.partition(":")
    kind = kind.lower()

    if kind == "synthetic":
        size, spec_fps = _parse_synthetic(arg, spec)
        w, h = size or (width or 640, height or 480)
        rate = spec_fps or fps or 30.0
        if count is not None:
            return SyntheticSource(w, h, rate, live=False, count=count)
        return SyntheticSource(w, h, rate, live=True, **reader)

    if kind == "picamera2":
        from .picamera2 import DEFAULT_LORES_SIZE, Picamera2Source

        if sep and not arg:
            raise SourceError(f"bad source '{spec}': write picamera2 or picamera2:WIDTHxHEIGHT")
        size = parse_size(arg, spec) if arg else (width or DEFAULT_LORES_SIZE[0], height or DEFAULT_LORES_SIZE[1])
        return Picamera2Source(size=size, fps=fps or 30.0, **reader)

    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme:
        if scheme not in STREAM_SCHEMES:
            raise SourceError(
                f"unsupported stream '{redact_url(text)}': use one of "
                + ", ".join(f"{s}://" for s in STREAM_SCHEMES)
            )
        return OpenCVSource(text, width=width, height=height, fps=fps, **reader)

    if text.isdigit():
        return OpenCVSource(int(text), width=width, height=height, fps=fps, **reader)
    if text.startswith("/dev/"):
        return OpenCVSource(text, width=width, height=height, fps=fps, **reader)

    path = os.path.expanduser(text)
    if prefetch is None:
        prefetch = auto_prefetch(compute_threads)
    ahead = (lambda src: DecodeAhead(src, prefetch)) if prefetch > 0 else (lambda src: src)
    if os.path.isdir(path):
        return ahead(ImageFolderSource(path, loop=loop))
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext in VIDEO_EXTENSIONS:
            video = VideoFileSource(path, realtime=realtime, loop=loop)
            return video if realtime else ahead(video)
        if ext in IMAGE_EXTENSIONS:
            return ImageFolderSource(path, loop=loop)
        raise SourceError(
            f"source {text} is neither a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
            f"nor an image ({', '.join(sorted(IMAGE_EXTENSIONS))}): convert it or rename it"
        )
    if any(c in path for c in "*?["):
        return ahead(ImageFolderSource(path, loop=loop))
    raise SourceError(f"source '{text}' not found: give {SPEC_HELP}")
