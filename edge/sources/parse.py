"""The ``--source`` string: what it may name, and :func:`open_source`, which opens it.

Accepted strings, matched in this order:

* ``synthetic``, ``synthetic:FPS``, ``synthetic:WxH``, ``synthetic:WxH@FPS``: generated frames
  (:class:`~edgesight.edge.sources.synthetic.SyntheticSource`).
* ``picamera2``, ``picamera2:WxH``: the Raspberry Pi camera
  (:class:`~edgesight.edge.sources.picamera2.Picamera2Source`).
* ``SCHEME://...`` with a scheme of :data:`STREAM_SCHEMES`: a network stream through FFmpeg
  (:class:`~edgesight.edge.sources.opencv.OpenCVSource`); other schemes are refused.
* digits (a camera index) or a path under ``/dev/``: a USB/V4L2 camera (``OpenCVSource``).
* an existing folder, a file ending in one of :data:`VIDEO_EXTENSIONS` or
  :data:`~edgesight.edge.sources.folder.IMAGE_EXTENSIONS`, or a glob pattern: a video file or
  images (``VideoFileSource``, ``ImageFolderSource``), decoded ahead on a worker thread when
  ``prefetch`` asks (:class:`~edgesight.edge.sources.decode_ahead.DecodeAhead`).

Kinds and schemes are case-insensitive; anything else is a SourceError saying what was expected.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from ..errors import SourceError
from ..frames import FrameSource
from .decode_ahead import DecodeAhead, auto_prefetch
from .folder import IMAGE_EXTENSIONS, ImageFolderSource
from .opencv import OpenCVSource, VideoFileSource, redact_url
from .synthetic import SyntheticSource

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp"}
)
# Seconds a camera or stream that cannot be opened at start is retried (it may still be booting).
DEFAULT_OPEN_TIMEOUT_S = 30.0
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

SPEC_HELP = (
    "a camera index (0), /dev/videoN, an rtsp:// or http(s):// URL, a video file, an image folder "
    "or glob, picamera2[:WxH] or synthetic[:FPS | :WxH@FPS]"
)

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
    open_timeout: Optional[float] = None,
    prefetch: Optional[int] = None,
    compute_threads: Optional[int] = None,
    target: Optional[Tuple[int, int]] = None,
    max_pixels: Optional[int] = None,
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
        open_timeout: seconds a camera or stream that cannot be opened at start is retried with
            back-off (None: 30; files and folders open once).
        prefetch: frames of a video file or image folder decoded ahead on a worker thread
            (0: decode on the caller's thread; None: :func:`auto_prefetch` decides).
        compute_threads: interpreter threads of the consumer, for ``prefetch=None``.
        target: for image files: the ``(height, width)`` frames are classified at; a much
            larger PNG or JPEG is decoded reduced (None: full size).
        max_pixels: for image files: skip, with a warning, a PNG or JPEG with more pixels.

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
        open_timeout=DEFAULT_OPEN_TIMEOUT_S if open_timeout is None else open_timeout,
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
        # Only a Pi camera source loads its adapter, which alone needs the picamera2 library.
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
    images = dict(loop=loop, target=target, max_pixels=max_pixels)
    if os.path.isdir(path):
        return ahead(ImageFolderSource(path, **images))
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext in VIDEO_EXTENSIONS:
            video = VideoFileSource(path, realtime=realtime, loop=loop)
            return video if realtime else ahead(video)
        if ext in IMAGE_EXTENSIONS:
            return ImageFolderSource(path, **images)
        raise SourceError(
            f"source {text} is neither a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
            f"nor an image ({', '.join(sorted(IMAGE_EXTENSIONS))}): convert it or rename it"
        )
    if any(c in path for c in "*?["):
        return ahead(ImageFolderSource(path, **images))
    raise SourceError(f"source '{text}' not found: give {SPEC_HELP}")
