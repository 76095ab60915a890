"""The base class of every result sink: one place that declares what a sink can do."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..frames import Frame, Result


class Sink(ABC):
    """Where the camera loop sends each result.

    A sink implements :meth:`write`, and :meth:`close` when it holds something to release. Every
    ability the loop or the CLI may use is declared here with the default that suits a sink
    without it, so callers read these attributes directly; a sink overrides only those that
    differ (as class attributes, instance attributes or properties).

    Attributes:
        needs_annotated: the sink wants the frame with the overlay drawn, passed to
            :meth:`write` as ``annotated`` (the loop draws it only when some sink asks).
        needs_raw_frame: the sink reads ``frame.image`` and must see it as captured; the loop
            then draws the overlay on a copy instead of on the frame itself.
        lossless: set by the loop before the first frame. True when every result must be
            recorded (a file or folder read frame by frame): a sink that could drop results
            (a queue) must wait instead. False for a camera, where the newest result matters.
        dropped: results this sink dropped so far; the loop adds them to its statistics.
        never_blocks: :meth:`write` only hands the result to a queue of the sink's own (MQTT's
            bounded, counted queue), so the loop calls it directly rather than through a
            second, smaller queue that would drop results before the sink's own sees them.
        quit_requested: True once the user asked to stop through this sink (a window's ``q``
            key); the loop stops after the current frame.
    """

    needs_annotated: bool = False
    needs_raw_frame: bool = False
    lossless: bool = False
    dropped: int = 0
    never_blocks: bool = False
    quit_requested: bool = False

    @property
    def address(self) -> Optional[Tuple[str, int]]:
        """The ``(host, port)`` this sink serves on, or None for a sink that serves nothing."""
        return None

    @property
    def inner(self) -> "Sink":
        """The sink that does the writing: this one, or the one a wrapper runs."""
        return self

    @abstractmethod
    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Handle one result.

        Args:
            frame: the captured frame (the overlay may already be drawn on ``frame.image``
                unless some sink sets ``needs_raw_frame``).
            result: the classification of the frame.
            annotated: the frame with the overlay, when some sink set ``needs_annotated``.
        """

    def update_stats(self, stats: Dict[str, Any]) -> None:
        """Receive the loop's live statistics (fps, drops, uptime...); ignored by default.

        ``stats["result"]`` is the event of the last result they count (None before the first),
        so a sink can show both as one snapshot.
        """

    def close(self) -> None:
        """Flush and release what the sink holds; nothing by default."""
