"""Input drift: a rolling window of frames compared with the model's baseline.

The model's ``baseline`` (written by ``edgesight convert``, see
:mod:`edgesight.edge.model.baseline`) says what its top-1 labels, top-1 scores and inputs looked
like on the verification images. The run loop keeps the same figures over the last ``window``
frames and compares them:

- ``psi_classes``: population stability index (PSI) of the top-1 label mix;
- ``psi_scores``: PSI of the histogram of top-1 scores (the baseline's bins);
- ``brightness_shift`` / ``contrast_shift``: how far the window's mean grey level and mean
  contrast (standard deviation of the grey levels of the model input) moved from the baseline's,
  in units of the baseline's spread across its images (its ``std``, at least 2 grey levels).

Both PSIs are computed on shares with half a count added to every bin on both sides, so a bin
that is empty in a small sample gives a finite term. Consecutive frames mostly show the same
thing, so the label mix is weighed as many observations as the window has runs of one label
(``label_runs``), not frames: a sign in view for 25 frames is one sighting, and ten signs are
ten observations however long they stayed. The PSIs are reported once the window is full,
because a window shorter than a scene's cycle (one traffic sign every two seconds) always looks
shifted; the input shifts from ``MIN_FRAMES`` frames on. The alert is raised when a
PSI exceeds ``threshold`` or a shift exceeds ``shift`` (either way), logged once with the figures,
and cleared, logged once again, when every figure is back under 80 % of its limit.

Every frame costs O(classes + bins) on top of the brightness and contrast of the model input
(two OpenCV calls on the tensor already made for the model).

The ``drift`` object (``/status``, the stats JSON, the status file, MQTT ``<prefix>/drift``)::

    {
      "window": 300,            # frames compared (--drift-window)
      "frames": 300,            # frames in the window now
      "seen": 1520,             # frames seen since the start
      "psi_classes": 0.04,      # null until the window is full
      "label_runs": 24,         # runs of one top-1 label in the window
      "psi_scores": 0.12,       # null until the window is full
      "brightness": 101.3,      # window mean grey level, 0-255 (null before MIN_FRAMES frames)
      "brightness_shift": -0.2, # (window - baseline) / baseline std (null before MIN_FRAMES)
      "contrast": 44.1,
      "contrast_shift": 0.5,
      "low_share": 0.09,        # share of frames with a top-1 score under the baseline's threshold
      "threshold": 0.5,         # PSI limit (--drift-threshold)
      "shift_threshold": 2.0,   # shift limit in baseline std (--drift-shift)
      "alert": false,
      "reasons": [],            # while alerted: the figures over their limit, e.g. "brightness -2.9 sd ..."
      "since_frame": null,      # frame index at which the current alert was raised
      "alerts": 0,              # alerts raised since the start
      "baseline": {"images": 240, "split": "test", "brightness": 107.3, "contrast": 37.4, "low_share": 0.01}
    }
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from ..model.baseline import PSEUDO_COUNT, Baseline, input_stats, psi_shares, score_bin

log = logging.getLogger("edgesight.drift")

MIN_FRAMES = 30
# The alert clears when every figure is under this share of its limit, so a figure hovering
# at the limit does not raise and clear it on alternate frames.
CLEAR_AT = 0.8
# A baseline whose images all had the same brightness would make any change infinite.
MIN_STD = 2.0


class DriftMonitor:
    """The drift figures of the last ``window`` frames against ``baseline``.

    Args:
        baseline: the model's baseline.
        window: frames compared.
        threshold: PSI above which the alert is raised.
        shift: brightness or contrast shift, in baseline std, above which the alert is raised.
    """

    def __init__(self, baseline: Baseline, window: int = 300, threshold: float = 0.5, shift: float = 2.0) -> None:
        if window < MIN_FRAMES:
            raise ConfigError(f"a drift window of {window} frames is too short; use at least {MIN_FRAMES}")
        self.baseline = baseline
        self.window = window
        self.threshold = threshold
        self.shift = shift
        self._edges = baseline.score_edges
        # The baseline's shares back to counts, smoothed once: the pseudo-count weighs the same on both sides.
        self._base_classes = _smoothed(baseline.classes, baseline.images)
        self._base_bins = _smoothed(baseline.score_hist, baseline.images)
        self._classes = np.zeros(len(baseline.classes), np.int64)
        self._bins = np.zeros(len(baseline.score_hist), np.int64)
        # (top-1 label, score bin, score under the baseline's threshold, label differs from the frame before)
        self._recent: Deque[Tuple[int, int, bool, bool]] = deque()
        self._changes = 0
        self._inputs: Deque[Tuple[float, float]] = deque()
        self._sums = [0.0, 0.0]
        self._low = 0
        self._since_resum = 0
        self.seen = 0
        self.alert = False
        self.alerts = 0
        self.since_frame: Optional[int] = None
        self._figures: Dict[str, Optional[float]] = {}

    input_stats = staticmethod(input_stats)

    def add(self, probs: np.ndarray, inputs: Optional[Tuple[float, float]], frame_index: int) -> Optional[str]:
        """Count one frame: its probabilities and its input's ``(brightness, contrast)``.

        Only the trained classes' probabilities count (the first ones): classes enrolled after
        conversion have no share in the baseline.

        Returns:
            ``"raised"`` or ``"cleared"`` when the alert changed with this frame, else None.
        """
        probs = probs[: len(self._classes)]
        top = int(np.argmax(probs))
        score = float(probs[top])
        b = score_bin(score, self._edges)
        low = score < self.baseline.threshold
        changed = bool(self._recent) and self._recent[-1][0] != top
        self._recent.append((top, b, low, changed))
        self._classes[top] += 1
        self._bins[b] += 1
        self._low += low
        self._changes += changed
        if len(self._recent) > self.window:
            old_top, old_b, old_low, old_changed = self._recent.popleft()
            self._classes[old_top] -= 1
            self._bins[old_b] -= 1
            self._low -= old_low
            self._changes -= old_changed
        if inputs is not None:
            self._inputs.append(inputs)
            self._sums[0] += inputs[0]
            self._sums[1] += inputs[1]
            if len(self._inputs) > self.window:
                old = self._inputs.popleft()
                self._sums[0] -= old[0]
                self._sums[1] -= old[1]
            self._since_resum += 1
            if self._since_resum >= self.window:  # running sums drift with rounding over days
                self._sums = [sum(v[0] for v in self._inputs), sum(v[1] for v in self._inputs)]
                self._since_resum = 0
        self.seen += 1
        self._figures = self._compute()
        over = self.reasons(self._figures, 1.0)
        if not self.alert and over:
            self.alert, self.since_frame = True, frame_index
            self.alerts += 1
            log.warning("input drift at frame %d: %s (over the last %d frames; the baseline is %d %s images)",
                        frame_index, "; ".join(over), len(self._recent), self.baseline.images, self.baseline.split or "verification")
            return "raised"
        if self.alert and not self.reasons(self._figures, CLEAR_AT):
            log.info("input drift cleared at frame %d (raised at frame %s): %s", frame_index, self.since_frame,
                     self.summary(self._figures))
            self.alert, self.since_frame = False, None
            return "cleared"
        return None

    def _compute(self) -> Dict[str, Optional[float]]:
        base = self.baseline
        n = len(self._recent)
        full = n >= self.window
        n_in = len(self._inputs)
        f: Dict[str, Optional[float]] = {
            "psi_classes": psi_shares(self._base_classes, self._classes * (self.label_runs / n)) if full else None,
            "psi_scores": psi_shares(self._base_bins, self._bins) if full else None,
            "brightness": None, "brightness_shift": None, "contrast": None, "contrast_shift": None,
            "low_share": self._low / len(self._recent) if self._recent else None,
        }
        if n_in >= min(MIN_FRAMES, self.window):
            for i, (name, stat) in enumerate((("brightness", base.brightness), ("contrast", base.contrast))):
                mean = self._sums[i] / n_in
                f[name] = mean
                f[f"{name}_shift"] = (mean - stat.mean) / max(stat.std, MIN_STD)
        return f

    @property
    def label_runs(self) -> int:
        """Runs of one top-1 label in the window: the observations its label mix is judged on."""
        if not self._recent:
            return 0
        return 1 + self._changes - int(self._recent[0][3])  # the oldest frame's change was from a frame gone

    def reasons(self, f: Dict[str, Optional[float]], scale: float) -> List[str]:
        """The figures over ``scale`` times their limit, as short phrases."""
        out = []
        for key, what in (("psi_scores", "score PSI"), ("psi_classes", "label-mix PSI")):
            v = f.get(key)
            if v is not None and v > self.threshold * scale:
                out.append(f"{what} {v:.2f} > {self.threshold:g}")
        for name, stat in (("brightness", self.baseline.brightness), ("contrast", self.baseline.contrast)):
            v = f.get(f"{name}_shift")
            if v is not None and abs(v) > self.shift * scale:
                out.append(f"{name} {v:+.1f} sd ({f[name]:.0f} vs {stat.mean:.0f} grey levels)")
        return out

    def summary(self, f: Dict[str, Optional[float]]) -> str:
        """Every figure on one line."""
        def fmt(v: Optional[float], spec: str) -> str:
            return "-" if v is None else format(v, spec)

        return (f"score PSI {fmt(f['psi_scores'], '.2f')}, label-mix PSI {fmt(f['psi_classes'], '.2f')}, "
                f"brightness {fmt(f['brightness_shift'], '+.1f')} sd, contrast {fmt(f['contrast_shift'], '+.1f')} sd")

    def to_dict(self) -> Dict[str, Any]:
        """The ``drift`` object (see the module docstring)."""
        r = lambda v, n=4: None if v is None else round(v, n)  # noqa: E731
        f = self._figures or self._compute()
        b = self.baseline
        return {
            "window": self.window,
            "frames": len(self._recent),
            "seen": self.seen,
            "psi_classes": r(f["psi_classes"]),
            "label_runs": self.label_runs,
            "psi_scores": r(f["psi_scores"]),
            "brightness": r(f["brightness"], 2),
            "brightness_shift": r(f["brightness_shift"], 3),
            "contrast": r(f["contrast"], 2),
            "contrast_shift": r(f["contrast_shift"], 3),
            "low_share": r(f["low_share"]),
            "threshold": self.threshold,
            "shift_threshold": self.shift,
            "alert": self.alert,
            "reasons": (self.reasons(f, 1.0) or self.reasons(f, CLEAR_AT)) if self.alert else [],
            "since_frame": self.since_frame,
            "alerts": self.alerts,
            "baseline": {"images": b.images, "split": b.split, "brightness": round(b.brightness.mean, 2),
                         "contrast": round(b.contrast.mean, 2), "low_share": round(b.low_share, 4)},
        }


def _smoothed(shares: Sequence[float], n: int) -> np.ndarray:
    counts = np.asarray(shares, np.float64) * n + PSEUDO_COUNT
    return counts / counts.sum()


def drift_monitor(info: Any, cfg: Any) -> Optional[DriftMonitor]:
    """The monitor a run with ``cfg`` (a :class:`~.config.RunConfig`) keeps for a model with
    ``info``; None when ``--drift-window 0`` turns it off or the model has no baseline (said once)."""
    if not cfg.drift_window:
        return None
    baseline = info.baseline
    if baseline is None:
        from ..model.anomaly import is_anomaly

        if is_anomaly(info):
            log.info("drift is not measured: anomaly detection bundles have no drift baseline")
            return None
        log.info("drift is not measured: the model has no baseline in model.json (bundles made by this version of "
                 "'edgesight convert' have one; convert the model again to add it)")
        return None
    return DriftMonitor(baseline, cfg.drift_window, cfg.drift_threshold, cfg.drift_shift)
