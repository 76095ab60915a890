"""Frame sources for the camera loop: cameras, streams, video files, image folders, synthetic frames.

``open_source(spec)`` turns the ``--source`` string into a :class:`~edgesight.edge.frames.FrameSource`
(the accepted strings are listed in :mod:`edgesight.edge.sources.parse`). Live sources are read by a
:class:`LatestFrameReader`, which keeps only the newest frame and reconnects a failed device;
finite ones are read on demand, optionally through :class:`DecodeAhead`.

Modules: ``base`` (the reader and what all kinds share), ``opencv`` (USB/V4L2 cameras, network
streams, video files), ``folder`` (image folders and globs), ``synthetic``, ``picamera2`` (the
Raspberry Pi camera), ``decode_ahead``, and ``parse`` (the source string).
"""

from .base import CaptureDevice, Grab, LatestFrameReader, to_bgr
from .decode_ahead import DecodeAhead, auto_prefetch
from .folder import IMAGE_EXTENSIONS, ImageFolderSource, list_images
from .opencv import OpenCVSource, VideoFileSource, redact_url
from .parse import SPEC_HELP, STREAM_SCHEMES, VIDEO_EXTENSIONS, open_source, parse_size
from .synthetic import SyntheticPattern, SyntheticSource

__all__ = [
    "open_source",
    "parse_size",
    "SPEC_HELP",
    "STREAM_SCHEMES",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "OpenCVSource",
    "VideoFileSource",
    "ImageFolderSource",
    "SyntheticSource",
    "Picamera2Source",
    "LatestFrameReader",
    "CaptureDevice",
    "Grab",
    "DecodeAhead",
    "auto_prefetch",
    "SyntheticPattern",
    "list_images",
    "redact_url",
    "to_bgr",
]


def __getattr__(name: str):
    # The Pi camera adapter is loaded on first use, as open_source does, so importing the
    # package on a machine without a Pi camera never touches it.
    if name == "Picamera2Source":
        from .picamera2 import Picamera2Source

        return Picamera2Source
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
