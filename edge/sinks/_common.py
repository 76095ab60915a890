"""Helpers shared by several sinks."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..frames import Frame, Result
from .overlay import draw_overlay


class ChangeFilter:
    """Tracks the label this sink saw last, so "changed" is judged on what the sink received
    (robust to frames an :class:`~edgesight.edge.sinks.AsyncSink` dropped before it)."""

    def __init__(self) -> None:
        self._last: Optional[str] = None

    def changed(self, label: str) -> bool:
        changed = label != self._last
        self._last = label
        return changed


def annotated_or_draw(frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> np.ndarray:
    """The image a sink that shows frames should use."""
    # The loop passes an annotated frame when any sink asks for one; used on its own, a sink
    # still shows the result rather than a bare frame.
    return annotated if annotated is not None else draw_overlay(frame.image, result)
