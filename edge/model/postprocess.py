"""Turning model outputs into reported labels: threshold, top-k, temporal smoothing with
hysteresis. Plain NumPy; tested without a model."""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np

from .quant import top_k

UNKNOWN = "unknown"


class Smoother:
    """Moving average of class probabilities over the last ``window`` frames, with hysteresis.

    The reported class changes only when another class's averaged probability exceeds the
    current one's by ``hysteresis``, so a label does not flicker between two close classes.

    Args:
        window: frames to average (1 disables averaging; hysteresis still applies).
        hysteresis: margin another class needs over the current one to take over.
    """

    def __init__(self, window: int = 1, hysteresis: float = 0.0) -> None:
        if window < 1:
            raise ValueError("smoothing window must be at least 1")
        self.window = window
        self.hysteresis = float(hysteresis)
        self._history: Deque[np.ndarray] = deque(maxlen=window)
        self._sum: Optional[np.ndarray] = None
        self.current: Optional[int] = None

    def update(self, probs: np.ndarray) -> Tuple[int, np.ndarray]:
        """Add one frame's probabilities; returns (reported class index, averaged probabilities)."""
        if self.window == 1:  # nothing to average: the per-frame fast path of the camera loop
            avg = np.asarray(probs)
            best = int(avg.argmax())
            if self.current is None or self.current >= avg.size or (best != self.current and avg[best] >= avg[self.current] + self.hysteresis):
                self.current = best
            return self.current, avg
        p = np.asarray(probs, np.float64)
        if self._sum is None or self._sum.shape != p.shape:
            self._sum = np.zeros_like(p)
            self._history.clear()
        if len(self._history) == self.window:
            self._sum -= self._history[0]
        self._history.append(p)
        self._sum += p
        avg = self._sum / len(self._history)
        best = int(avg.argmax())
        if self.current is None or (best != self.current and avg[best] >= avg[self.current] + self.hysteresis):
            self.current = best
        return self.current, avg

    def reset(self) -> None:
        self._history.clear()
        self._sum = None
        self.current = None


class Decider:
    """Probabilities -> (label, score, top-k), with threshold and optional smoothing.

    Args:
        labels: class names in output order.
        threshold: below this (smoothed) probability the label is ``unknown``.
        k: how many entries of the raw output to report as top-k.
        smooth: frames to average (``--smooth N``); 1 = no smoothing.
        hysteresis: margin for switching labels when smoothing.
    """

    def __init__(self, labels: Sequence[str], threshold: float = 0.0, k: int = 3, smooth: int = 1, hysteresis: float = 0.1) -> None:
        self.labels = list(labels)
        self.threshold = float(threshold)
        self.k = k
        self.smoother = Smoother(smooth, hysteresis if smooth > 1 else 0.0)
        self.last_label: Optional[str] = None

    def __call__(self, probs: np.ndarray) -> Tuple[str, float, List[Tuple[str, float]], bool]:
        """Returns ``(label, score, top_k, changed)``."""
        idx, avg = self.smoother.update(probs)
        score = float(avg[idx])
        label = self.labels[idx] if score >= self.threshold else UNKNOWN
        ti, tv = top_k(probs, self.k)
        changed = label != self.last_label
        self.last_label = label
        return label, score, [(self.labels[i], float(v)) for i, v in zip(ti, tv)], changed
