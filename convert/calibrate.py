"""Calibrated scores: temperature scaling fitted on held-out labelled images.

A classifier's top score is rarely the chance that its label is right: label smoothing (on by
default in ``train``) and a small head make it under-confident, long training over-confident.
Dividing the pre-softmax logits by one temperature ``T`` fitted on labelled images the model
did not train on turns the scores into probabilities without changing any prediction (Guo et
al., 2017, "On Calibration of Modern Neural Networks").

``T`` is baked into the model before conversion: the kernel and bias of the Dense layer that
feeds the softmax are divided by ``T``, so ``softmax(W x / T + b / T) = softmax(logits / T)``.
The .tflite's own output is then calibrated for every runtime (MediaPipe Tasks, Android,
edgesight's), the graph keeps the same ops (an Edge TPU maps it as before), and a device needs
no extra field to honour. ``model.json`` and ``conversion_report.json`` record ``T``.

The maths (softmax, negative log-likelihood, the fit, ECE, reliability bins) are plain numpy
functions; the Keras helpers and the plot import their libraries when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.fsutil import atomic_path
from edgesight.edge.model.spec import PreprocessSpec
from edgesight.training.data import Sample, Split

# The search range of T: 0.05 makes a logit gap of 1 a gap of 20; 20 flattens any useful model.
TEMPERATURE_BOUNDS = (0.05, 20.0)
ECE_BINS = 15
CHUNK = 256


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, in float64."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check(logits: np.ndarray, labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be N x K with K >= 2 classes, got shape {z.shape}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"{y.shape[0] if y.ndim else 0} labels for {z.shape[0]} rows of logits; give one label per row")
    if z.shape[0] == 0:
        raise ValueError("no logits to fit a temperature on; give at least one labelled image")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be class indices in 0..{z.shape[1] - 1}")
    return z, y


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0, smoothing: float = 0.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (cross-entropy).

    Args:
        smoothing: target mass moved from the labelled class to the others (spread evenly);
            0 gives the plain negative log-likelihood of the labels.
    """
    z, y = _check(logits, labels)
    s = z / float(temperature)
    m = s.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(s - m).sum(axis=1)))
    true = s[np.arange(len(y)), y]
    if not smoothing:
        return float(np.mean(lse - true))
    k = z.shape[1]
    others = (s.sum(axis=1) - true) / (k - 1)
    return float(np.mean(lse - (1.0 - smoothing) * true - smoothing * others))


def fit_temperature(
    logits: np.ndarray,
    labels: Sequence[int],
    bounds: Tuple[float, float] = TEMPERATURE_BOUNDS,
    prior: bool = True,
    tol: float = 1e-6,
) -> float:
    """The temperature that minimises the negative log-likelihood on labelled logits.

    A golden-section search over ``log T`` within ``bounds``: the loss is convex in ``1 / T``,
    so the search finds the global minimum (or the bound it lies beyond) deterministically.

    Args:
        logits: ``N x K`` pre-softmax outputs.
        labels: ``N`` class indices.
        prior: use Platt's (1999) prior, targets ``1 - e`` for the labelled class and ``e``
            spread over the others with ``e = 1 / (N + 2)``. Without it the loss of a split the
            model classifies entirely correctly keeps falling as ``T`` goes to 0 (scores of 1.0
            for everything, errors included); with it the fit stays finite, and it tends to the
            plain likelihood as ``N`` grows.
        tol: width of the final bracket in ``log T``.

    Returns:
        ``T`` within ``bounds``.
    """
    z, y = _check(logits, labels)
    lo, hi = (float(b) for b in bounds)
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    eps = 1.0 / (len(y) + 2) if prior else 0.0

    def loss(t: float) -> float:
        return nll(z, y, math.exp(t), eps)

    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = math.log(lo), math.log(hi)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return float(min(max(math.exp((a + b) / 2.0), lo), hi))


def reliability_bins(probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> Dict[str, np.ndarray]:
    """Images grouped by top score into ``bins`` equal-width bins ``(lo, hi]`` of [0, 1].

    Returns:
        ``edges`` (bins + 1), and per bin ``count``, mean ``confidence`` (top score) and
        ``accuracy`` (share whose top class is the label); NaN for empty bins.
    """
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels, np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probabilities must be N x K with one label per row, got {p.shape} and {y.shape}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=conf, minlength=bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": confidence, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS) -> float:
    """ECE: the image-weighted mean of ``|accuracy - confidence|`` over the reliability bins."""
    r = reliability_bins(probs, labels, bins)
    n = int(r["count"].sum())
    if n == 0:
        return 0.0
    gap = np.abs(r["accuracy"] - r["confidence"])
    return float(np.nansum(r["count"] * gap) / n)


@dataclass(frozen=True)
class FitSplit:
    """The labelled images a temperature is fitted on (``name``: ``val`` or ``calib-holdout``),
    or why there are none (``missing``); ``note`` travels to the report."""

    samples: Sequence[Sample] = ()
    name: str = ""
    missing: str = ""
    note: Optional[str] = None


def fit_split(run_split: Optional[Split], calib_split: Optional[Split], own_eval: bool) -> FitSplit:
    """Where to fit the temperature: a run's validation split, else the held-out part of a
    labelled ``--calib`` dataset (``own_eval``: ``--eval`` gives other images to verify on)."""
    if run_split is not None:
        if run_split.val:
            return FitSplit(run_split.val, "val")
        return FitSplit(missing="not calibrated: the run has no validation split; train with --val-split above 0")
    if calib_split is not None and calib_split.test:
        note = None if own_eval else "fitted on the verification images (no --eval): the ECE after calibration is optimistic"
        return FitSplit(calib_split.test, "calib-holdout", note=note)
    return FitSplit(missing="not calibrated: no labelled images to fit the temperature on; give --calib a labelled dataset (class folders)")


@dataclass
class Calibration:
    """The outcome of :func:`calibrate_model`.

    Attributes:
        temperature: ``T`` baked into the model (1.0 when not applied).
        applied: whether the model's head was rescaled.
        fitted_on, num_images: the split ``T`` was fitted on and its size.
        nll_before, nll_after: its negative log-likelihood at ``T = 1`` and at ``T``.
        note: why calibration was skipped, or what to keep in mind about it.
        eval_logits: the verification images' logits before scaling (for the "before" figures).
    """

    temperature: float = 1.0
    applied: bool = False
    fitted_on: Optional[str] = None
    num_images: int = 0
    nll_before: Optional[float] = None
    nll_after: Optional[float] = None
    note: Optional[str] = None
    eval_logits: Optional[np.ndarray] = None

    def to_dict(self) -> Dict[str, Any]:
        """The ``calibration`` entry of ``conversion_report.json``."""
        d: Dict[str, Any] = {"method": "temperature", "temperature": round(self.temperature, 6), "applied": self.applied,
                             "fitted_on": self.fitted_on, "num_images": self.num_images}
        if self.nll_before is not None:
            d["nll_before"] = round(self.nll_before, 6)
            d["nll_after"] = round(self.nll_after or 0.0, 6)
        if self.note:
            d["note"] = self.note
        return d

    def model_info(self) -> Dict[str, Any]:
        """The ``calibration`` entry of ``model.json``; ``in_model``: the .tflite's scores
        already include ``T``, so no runtime divides by it again."""
        return {"method": "temperature", "temperature": round(self.temperature, 6), "in_model": self.applied,
                "fitted_on": self.fitted_on, "num_images": self.num_images}

    def probs_before(self, float_probs: np.ndarray) -> np.ndarray:
        """The verification images' probabilities without ``T``."""
        return softmax(self.eval_logits) if self.eval_logits is not None else np.asarray(float_probs, np.float64)

    def ece(self, labels: np.ndarray, float_probs: np.ndarray, quant_probs: np.ndarray, bins: int = ECE_BINS) -> Dict[str, Any]:
        """The ``ece`` entry of the report: the Keras model before ``T``, and the Keras and the
        converted model after it (``float_probs``, ``quant_probs``), on the verification images."""
        return {
            "bins": bins,
            "before": {"float": round(expected_calibration_error(self.probs_before(float_probs), labels, bins), 6)},
            "after": {"float": round(expected_calibration_error(float_probs, labels, bins), 6),
                      "quant": round(expected_calibration_error(quant_probs, labels, bins), 6)},
        }


def logit_layer(model) -> Optional[Any]:
    """The Dense layer whose outputs are the model's logits, when the model ends in
    ``Dense(activation="softmax")`` or in a softmax layer right after a linear Dense; else None."""
    from edgesight.training.tf import import_keras

    keras = import_keras()
    if len(getattr(model, "outputs", None) or ()) != 1:
        return None
    try:
        last = model.outputs[0]._keras_history.operation
    except AttributeError:
        return None

    def is_softmax(fn) -> bool:
        return getattr(fn, "__name__", "") == "softmax"

    dense = None
    if isinstance(last, keras.layers.Dense) and is_softmax(last.activation):
        dense = last
    elif isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation) and is_softmax(last.activation)):
        try:
            before = last.input._keras_history.operation
        except (AttributeError, ValueError):
            return None
        if isinstance(before, keras.layers.Dense) and getattr(before.activation, "__name__", "") == "linear":
            dense = before
    if dense is None or len(dense.kernel.shape) != 2:
        return None
    try:
        if len(dense.input.shape) != 2:
            return None
    except (AttributeError, ValueError):  # a layer used more than once has no single input
        return None
    return dense


def predict_logits(model, dense, samples: Sequence[Sample], spec: PreprocessSpec, progress: bool = True, stream=None, desc: str = "fitting temperature") -> np.ndarray:
    """The logits of ``dense`` (see :func:`logit_layer`) for ``samples``, computed in float64
    from the features that feed it and its current weights."""
    from tqdm import tqdm

    from edgesight.training.pipeline import inference_batch, load_batch
    from edgesight.training.tf import import_keras

    keras = import_keras()
    features = keras.Model(model.inputs, dense.input)
    weights = dense.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    bias = np.asarray(weights[1], np.float64) if len(weights) > 1 else 0.0
    out = np.zeros((len(samples), kernel.shape[1]), np.float64)
    with tqdm(total=len(samples), desc=desc, unit="img", disable=None if progress else True, leave=False, file=stream) as bar:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start : start + CHUNK]
            images = load_batch([s.path for s in chunk], spec).astype(np.float32)
            f = features.predict(images, batch_size=inference_batch(spec.height, spec.width), verbose=0)
            out[start : start + len(chunk)] = np.asarray(f, np.float64) @ kernel + bias
            bar.update(len(chunk))
    return out


def calibrate_model(
    model,
    spec: PreprocessSpec,
    labels: Sequence[str],
    fit: FitSplit,
    eval_samples: Sequence[Sample],
    enabled: bool = True,
    progress: bool = True,
    stream=None,
) -> Calibration:
    """Fit ``T`` on ``fit`` and divide the logit layer's kernel and bias by it, in place.

    Predictions do not change (T > 0 keeps the order of the logits); only the scores do.

    Returns:
        What was fitted and applied, or, with ``applied`` False, why not (``note``): disabled,
        no labelled images to fit on, classes the model does not know, or a model whose output
        is not a softmax over a Dense layer.
    """
    if not enabled:
        return Calibration(note="--no-calibrate: the scores are the model's own")
    if not fit.samples:
        return Calibration(note=fit.missing or "no labelled images to fit a temperature on")
    index = {c: i for i, c in enumerate(labels)}
    unknown = sorted({s.label for s in fit.samples} - set(index))
    if unknown:
        return Calibration(note=f"not calibrated: the {fit.name} images have classes the model does not know ({', '.join(unknown[:5])})")
    dense = logit_layer(model)
    if dense is None:
        return Calibration(note="not calibrated: the model's output is not a softmax over a Dense layer, so there are no logits to scale")
    y = np.array([index[s.label] for s in fit.samples], np.int64)
    z = predict_logits(model, dense, fit.samples, spec, progress, stream)
    t = fit_temperature(z, y)
    z_eval = predict_logits(model, dense, eval_samples, spec, progress, stream, desc="scoring before calibration")
    weights = dense.get_weights()
    dense.set_weights([w / t for w in weights])
    note = fit.note
    if any(math.isclose(t, b, rel_tol=1e-3) for b in TEMPERATURE_BOUNDS):
        note = "; ".join(filter(None, [note, f"the temperature reached its search bound {t:g}: the {fit.name} images say little about confidence; give more labelled images"]))
    return Calibration(temperature=t, applied=True, fitted_on=fit.name, num_images=len(y),
                       nll_before=nll(z, y), nll_after=nll(z, y, t), note=note, eval_logits=z_eval)


def plot_reliability(path: Path, labels: np.ndarray, before: np.ndarray, after: np.ndarray, temperature: float,
                     after_name: str = "int8", bins: int = ECE_BINS) -> Path:
    """Reliability diagram (accuracy against confidence per bin) before and after calibration,
    side by side, with the share of images in each bin; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    panels = ((axes[0], before, "before: Keras model, T = 1"), (axes[1], after, f"after: {after_name}, T = {temperature:.3g}"))
    for ax, probs, title in panels:
        r = reliability_bins(probs, labels, bins)
        centres = (r["edges"][:-1] + r["edges"][1:]) / 2
        width = 1.0 / bins
        acc = np.nan_to_num(r["accuracy"])
        conf = np.where(r["count"] > 0, r["confidence"], np.nan)
        share = r["count"] / max(1, int(r["count"].sum()))
        ax.bar(centres, acc, width=width * 0.9, color="tab:blue", alpha=0.6, label="accuracy")
        ax.stairs(share, r["edges"], color="black", lw=1, label="share of images")
        ax.plot(centres, conf, "o", color="tab:red", ms=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="0.4", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top score)",
               title=f"{title}\nECE {expected_calibration_error(probs, labels, bins):.3f}")
    axes[0].set_ylabel("accuracy")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def format_ece_line(report: Dict[str, Any]) -> List[str]:
    """The calibration row of the conversion table: ECE of the Keras and the converted model
    after calibration, then before it and ``T`` (or why nothing was calibrated)."""
    ece, cal = report.get("ece"), report.get("calibration", {})
    if not ece:
        return []
    after = ece["after"]
    if cal.get("applied"):
        tail = f"   (uncalibrated {ece['before']['float']:.4f}, T {cal['temperature']:.3g})"
    else:
        tail = f"   ({cal.get('note', 'not calibrated')})"
    return [f"{'ECE (' + str(ece['bins']) + ' bins)':<18}{after['float']:>10.4f}{after['quant']:>14.4f}{tail}"]
