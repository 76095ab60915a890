"""Cameras, streams and video files through OpenCV: the one module that creates a ``cv2.VideoCapture``.

USB/V4L2 cameras and streams (RTSP, HTTP, ...) are live, read by a
:class:`~edgesight.edge.sources.base.LatestFrameReader` that reconnects them; video files are
finite and decoded on demand. Every capture is created by :func:`_open_capture`, the function
tests replace with a fake.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import SourceError
from ..frames import Frame
from ..urls import redact_url
from .base import Grab, LatestFrameReader, _check_positive, _SourceBase, to_bgr

log = logging.getLogger("edgesight.source")

# Stream reads that hang (a camera that went away mid-frame) must fail so the reader can reconnect.
DEFAULT_STREAM_TIMEOUT_S = 10.0
# Used only to pace realtime playback of a file whose header carries no frame rate.
FALLBACK_VIDEO_FPS = 30.0


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
