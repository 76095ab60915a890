"""The drift baseline of a model: what its outputs and inputs looked like when it was verified.

``edgesight convert`` computes it from the converted model's outputs on the verification images
and stores it in ``model.json`` under ``baseline``; the run loop compares a rolling window of
frames with it (:mod:`edgesight.edge.loop.drift`). Plain NumPy, no interpreter.

``model.json`` ``baseline``::

    {
      "images": 240,                          # verification images it was computed on
      "split": "test",                        # where they came from
      "classes": [0.1, 0.1, ...],             # share of each label (labels order) as top-1
      "score_edges": [0.0, 0.1, ..., 1.0],    # bins of the top-1 score
      "score_hist": [0.0, ..., 0.83],         # share of images in each bin
      "threshold": 0.5,                       # the score "low_share" counts under
      "low_share": 0.03,                      # share of images whose top-1 score is under it
      "brightness": {"mean": 118.2, "std": 31.0},   # per-image mean grey level of the model input
      "contrast": {"mean": 45.1, "std": 12.3}       # per-image std of those grey levels
    }

Brightness and contrast are measured on the model input (after resizing and the region of
interest), in grey levels 0-255 (``0.299 R + 0.587 G + 0.114 B``); the ``std`` of each is its
spread across the verification images, the unit the run loop measures shifts in.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import BundleError

SCORE_BINS = 10
DEFAULT_THRESHOLD = 0.5
PSEUDO_COUNT = 0.5



def psi(expected_counts: Sequence[float], actual_counts: Sequence[float], pseudo_count: float = PSEUDO_COUNT) -> float:
    """Population stability index of ``actual_counts`` against ``expected_counts`` (same bins).

    ``sum((a - e) * ln(a / e))`` over the bins, where each side's shares are taken with
    ``pseudo_count`` added to every bin, ``(count + 0.5) / (n + 0.5 * bins)``, so a bin empty in
    a small sample gives a large but finite term. Rules of thumb: under 0.1 no change, 0.1-0.2
    a moderate one, above 0.2 a significant shift.
    """
    e = np.asarray(expected_counts, np.float64) + pseudo_count
    return psi_shares(e / e.sum(), actual_counts, pseudo_count)


def psi_shares(expected: np.ndarray, actual_counts: Sequence[float], pseudo_count: float = PSEUDO_COUNT) -> float:
    """:func:`psi` with the expected side already smoothed into shares (computed once per run)."""
    a = np.asarray(actual_counts, np.float64) + pseudo_count
    a /= a.sum()
    return float(np.dot(a - expected, np.log(a / expected)))


def input_stats(pixels: np.ndarray) -> Tuple[float, float]:
    """``(brightness, contrast)`` of one ``HxWxC`` uint8 model input: the mean and the standard
    deviation of its grey levels (RGB weighed ``0.299, 0.587, 0.114``; a one-channel input as is)."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 and pixels.shape[2] == 3 else pixels.reshape(pixels.shape[:2])
    mean, std = cv2.meanStdDev(grey)
    return float(mean[0, 0]), float(std[0, 0])


def score_bin(score: float, edges: Sequence[float]) -> int:
    """The bin of a top-1 score between ``edges`` (rising from 0 to 1; 1.0 falls in the last)."""
    return min(len(edges) - 2, max(0, bisect.bisect_right(edges, score) - 1))


@dataclass(frozen=True)
class Stat:
    """A per-image figure's mean and its spread across the baseline images."""

    mean: float
    std: float

    def to_dict(self) -> Dict[str, float]:
        return {"mean": round(self.mean, 4), "std": round(self.std, 4)}


@dataclass(frozen=True)
class Baseline:
    """The figures a window of frames is compared with (see the module docstring)."""

    classes: Tuple[float, ...]
    score_hist: Tuple[float, ...]
    score_edges: Tuple[float, ...]
    threshold: float
    low_share: float
    brightness: Stat
    contrast: Stat
    images: int
    split: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "split": self.split,
            "classes": [round(v, 6) for v in self.classes],
            "score_edges": [round(v, 6) for v in self.score_edges],
            "score_hist": [round(v, 6) for v in self.score_hist],
            "threshold": self.threshold,
            "low_share": round(self.low_share, 6),
            "brightness": self.brightness.to_dict(),
            "contrast": self.contrast.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, num_classes: Optional[int], where: str = "model.json") -> "Baseline":
        """Read and check ``model.json``'s ``baseline``; ``num_classes`` None leaves the length of
        ``classes`` unchecked (when the labels themselves are still to be checked against the model).

        Raises:
            BundleError: one line naming ``where``, the field and what is wrong with it.
        """
        def bad(field: str, problem: str) -> BundleError:
            name = f"baseline.{field}" if field else "baseline"
            return BundleError(f"{where}: {name} {problem}; run 'edgesight convert' again to write a valid "
                               "baseline, or remove the 'baseline' key to run without drift figures")

        if not isinstance(d, Mapping):
            raise bad("", f"is {type(d).__name__}, not an object")

        def number(field: str, value: Any, low: float, high: float) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(field, f"is {value!r}, not a number")
            if not low <= value <= high:
                raise bad(field, f"is {value}, outside {low:g}-{high:g}")
            return float(value)

        def shares(field: str, length: Optional[int]) -> Tuple[float, ...]:
            value = d.get(field)
            if not isinstance(value, list) or not value or (length is not None and len(value) != length):
                got = f"{len(value)} values" if isinstance(value, list) else repr(value)
                raise bad(field, f"has {got}, expected a list of {length or 'one or more'} shares")
            out = tuple(number(f"{field}[{i}]", v, 0.0, 1.0) for i, v in enumerate(value))
            if not math.isclose(sum(out), 1.0, abs_tol=1e-3):
                raise bad(field, f"sums to {sum(out):.4f}, not 1")
            return out

        def stat(field: str) -> Stat:
            value = d.get(field)
            if not isinstance(value, Mapping):
                raise bad(field, f"is {value!r}, expected {{\"mean\": ..., \"std\": ...}}")
            return Stat(number(f"{field}.mean", value.get("mean"), 0.0, 255.0),
                        number(f"{field}.std", value.get("std"), 0.0, 255.0))

        edges = d.get("score_edges")
        if not isinstance(edges, list) or not 2 <= len(edges) <= 101:
            raise bad("score_edges", f"is {edges!r}, expected a list of 2 to 101 bin edges")
        edges_t = tuple(number(f"score_edges[{i}]", v, 0.0, 1.0) for i, v in enumerate(edges))
        if any(b <= a for a, b in zip(edges_t, edges_t[1:])) or edges_t[0] != 0.0 or edges_t[-1] != 1.0:
            raise bad("score_edges", "must rise strictly from 0 to 1")
        images = d.get("images")
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise bad("images", f"is {images!r}, not a positive whole number")
        return cls(
            classes=shares("classes", num_classes),
            score_hist=shares("score_hist", len(edges_t) - 1),
            score_edges=edges_t,
            threshold=number("threshold", d.get("threshold"), 0.0, 1.0),
            low_share=number("low_share", d.get("low_share"), 0.0, 1.0),
            brightness=stat("brightness"),
            contrast=stat("contrast"),
            images=images,
            split=str(d.get("split", "")),
        )


def compute_baseline(probs: np.ndarray, stats: np.ndarray, split: str = "", threshold: float = DEFAULT_THRESHOLD,
                     bins: int = SCORE_BINS) -> Baseline:
    """The baseline of a model from its outputs on the verification images.

    Args:
        probs: ``N x K`` probabilities of the converted model.
        stats: ``N x 2`` ``(brightness, contrast)`` of the same images (:func:`input_stats`).
        split: where the images came from (recorded).
        threshold: the score ``low_share`` counts under.
        bins: equal bins of [0, 1] for the top-1 score.

    Raises:
        ValueError: no images, or ``stats`` not one row per image.
    """
    probs = np.asarray(probs, np.float64)
    stats = np.asarray(stats, np.float64).reshape(-1, 2)
    if probs.ndim != 2 or not len(probs) or len(stats) != len(probs):
        raise ValueError(f"a baseline needs N x K probabilities and N x 2 input statistics, got {probs.shape} and {stats.shape}")
    n, k = probs.shape
    top, score = probs.argmax(1), probs.max(1)
    edges = tuple(i / bins for i in range(bins + 1))
    hist = np.bincount([score_bin(s, edges) for s in score], minlength=bins) / n
    return Baseline(
        classes=tuple(float(v) for v in np.bincount(top, minlength=k) / n),
        score_hist=tuple(float(v) for v in hist),
        score_edges=edges,
        threshold=float(threshold),
        low_share=float((score < threshold).mean()),
        brightness=Stat(float(stats[:, 0].mean()), float(stats[:, 0].std())),
        contrast=Stat(float(stats[:, 1].mean()), float(stats[:, 1].std())),
        images=int(n),
        split=split,
    )
