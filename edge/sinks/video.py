"""The annotated frames as a video file (.mp4 or .avi)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from ..errors import ConfigError, EdgesightError
from ..frames import Frame, Result
from ..fsutil import PathLike
from ._common import annotated_or_draw
from .base import Sink


_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


class VideoSink(Sink):
    """Writes the annotated frames to a video file with ``cv2.VideoWriter``.

    The codec follows the extension: ``mp4v`` for ``.mp4``, ``MJPG`` for ``.avi``. The writer is
    opened at the first frame, at ``size`` or else that frame's size; frames of another size (an
    image-folder source) are resized to it.

    Attributes:
        frames_written: frames written so far.
    """

    needs_annotated = True

    def __init__(self, path: PathLike, fps: float, size: Optional[Tuple[int, int]] = None) -> None:
        """Check the arguments; the file is created at the first frame.

        Args:
            path: the output ``.mp4`` or ``.avi`` file; its folder is created.
            fps: the frame rate stored in the file (the camera's, for real-time playback).
            size: ``(width, height)`` of the video, or None for the first frame's size.

        Raises:
            ConfigError: an unsupported extension, a non-positive fps or size.
        """
        self.path = str(path)
        suffix = Path(self.path).suffix.lower()
        if suffix not in _FOURCC:
            raise ConfigError(f"cannot write video {self.path}: use a .mp4 (mp4v) or .avi (MJPG) file name")
        if not fps > 0:
            raise ConfigError(f"video fps must be positive, got {fps}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ConfigError(f"video size must be (width, height) in pixels, got {size}")
        self.fps = float(fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.fourcc = _FOURCC[suffix]
        self.frames_written = 0
        self._writer: Optional[cv2.VideoWriter] = None
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _open(self, image: np.ndarray) -> cv2.VideoWriter:
        if self.size is None:
            w, h = image.shape[1], image.shape[0]
            if self.fourcc == "mp4v":
                # MPEG-4 part 2 needs even dimensions; trim a pixel rather than fail to open.
                w, h = max(2, w - w % 2), max(2, h - h % 2)
            self.size = (w, h)
        writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not writer.isOpened():
            raise EdgesightError(
                f"cannot open {self.path} to write a {self.fourcc} video at {self.size[0]}x{self.size[1]}: "
                "check that the folder is writable, or use an .avi file (MJPG is built into every OpenCV)"
            )
        return writer

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Append one frame (the annotated one when given).

        Raises:
            EdgesightError: the video file cannot be opened at the first frame.
        """
        image = annotated_or_draw(frame, result, annotated)
        if self._writer is None:
            self._writer = self._open(image)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (writes the container index an .mp4 needs to play)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
