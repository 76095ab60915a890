"""Generated frames for demos, benchmarks and tests: a deterministic pattern, no camera needed.

Paced by a clock thread, the frames behave like a camera's (latest-frame semantics, drops
counted); unpaced, each read renders the next frame at once.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import cv2
import numpy as np

from ..errors import ConfigError
from ..frames import Frame
from .base import Grab, LatestFrameReader, _check_positive, _SourceBase


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
