"""Fitting an anomaly scorer to good parts, calibrating its threshold, and measuring it.

Plain NumPy, so the same code fits the float model's features in ``train``, the int8 model's in
``convert``, and scores an evaluation on a device without TensorFlow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from .anomaly import OK, STATE_DIR, PadimScorer, PatchCoreScorer, ReconstructionScorer

# PaDiM's covariance regulariser (the paper's 0.01 * I).
PADIM_EPS = 0.01


def greedy_coreset(points: np.ndarray, size: int, project: int = 128, seed: int = 0,
                   progress: Any = None) -> np.ndarray:
    """Indices of ``size`` points chosen by greedy k-centre (each next point the farthest from
    those chosen), on a random projection to ``project`` dimensions as PatchCore does."""
    x = np.asarray(points, np.float32)
    n = len(x)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if x.shape[1] > project:
        x = x @ (rng.standard_normal((x.shape[1], project)).astype(np.float32) / math.sqrt(project))
    sq = (x ** 2).sum(1)
    chosen = np.empty(size, np.int64)
    chosen[0] = int(rng.integers(n))
    nearest = sq - 2.0 * (x @ x[chosen[0]]) + sq[chosen[0]]
    # A chosen point's own distance is rounding noise, which can top repeated points' (a plain
    # background repeats a patch): never pick it again.
    nearest[chosen[0]] = -np.inf
    for i in range(1, size):
        j = int(nearest.argmax())
        chosen[i] = j
        np.minimum(nearest, sq - 2.0 * (x @ x[j]) + sq[j], out=nearest)
        nearest[j] = -np.inf
        if progress is not None and i % 256 == 0:
            progress(256)
    return chosen


def fit_patchcore(features: np.ndarray, bank_size: int, seed: int = 0, progress: Any = None) -> PatchCoreScorer:
    """A memory bank of at most ``bank_size`` patches of ``N x h x w x D`` good features."""
    f = np.asarray(features, np.float32)
    patches = f.reshape(-1, f.shape[-1])
    keep = greedy_coreset(patches, bank_size, seed=seed, progress=progress)
    return PatchCoreScorer(patches[np.sort(keep)])


def ledoit_wolf_shrinkage(xc: np.ndarray, emp: Optional[np.ndarray] = None) -> np.ndarray:
    """The Ledoit-Wolf shrinkage of each location's covariance towards a scaled identity.

    ``xc`` is ``N x P x D``: N centred samples at each of P locations. Returns ``P`` amounts in
    [0, 1], the same as ``sklearn.covariance.ledoit_wolf_shrinkage(xc[:, p], assume_centered=True)``
    (Ledoit & Wolf, 2004), computed for all locations at once. ``emp``: the ``P x D x D``
    covariances ``xc^T xc / N`` when the caller has them already."""
    n, _, d = xc.shape
    if emp is None:
        emp = np.matmul(xc.transpose(1, 2, 0), xc.transpose(1, 0, 2)) / n
    mu = np.trace(emp, axis1=1, axis2=2) / d
    frob = (emp ** 2).sum((1, 2))
    beta = ((((xc ** 2).sum(2)) ** 2).sum(0) / n - frob) / (d * n)
    delta = (frob - d * mu ** 2) / d
    beta = np.minimum(beta, delta)
    return np.where(delta > 0, beta / np.where(delta > 0, delta, 1.0), 0.0)


def fit_padim(features: np.ndarray, eps: float = PADIM_EPS, shrink: bool = True) -> PadimScorer:
    """A Gaussian per grid location of ``N x h x w x D`` good features (needs N >= 2).

    With a few hundred good images a location's ``D x D`` sample covariance is noisy (D = 152
    features from 300 images), and its inverse exaggerates the directions it underestimates. With
    ``shrink`` each location's covariance ``C`` becomes ``(1 - s) C + s (tr C / D) I``, with the
    Ledoit-Wolf amount ``s`` estimated from the good images themselves (no tuning); then, as in
    PaDiM, ``eps * I`` is added before inverting."""
    f = np.asarray(features, np.float64)
    n, h, w, d = f.shape
    if n < 2:
        raise ConfigError(f"PaDiM needs at least 2 good images to fit, got {n}")
    x = f.reshape(n, h * w, d)
    mean = x.mean(0)
    xc = x - mean
    scatter = np.matmul(xc.transpose(1, 2, 0), xc.transpose(1, 0, 2))  # P x D x D
    cov = scatter / (n - 1)
    if shrink:
        s = ledoit_wolf_shrinkage(xc, scatter / n)[:, None, None]
        target = (np.trace(cov, axis1=1, axis2=2) / d)[:, None, None] * np.eye(d)[None]
        cov = (1 - s) * cov + s * target
    cov += eps * np.eye(d)[None]
    return PadimScorer(mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32))


def fit_scorer(method: str, features: np.ndarray, *, bank_size: int = 4000, seed: int = 0,
               grid: Optional[Tuple[int, int]] = None, progress: Any = None):
    """The scorer of ``method`` fitted to good features (the autoencoder's has no state)."""
    if method == "patchcore":
        return fit_patchcore(features, bank_size, seed, progress)
    if method == "padim":
        return fit_padim(features)
    if method == "autoencoder":
        return ReconstructionScorer(grid or (1, 1))
    raise ConfigError(f"anomaly method {method!r} is not one of patchcore, padim, autoencoder")


def threshold_for(good_scores: Sequence[float], false_reject: float) -> float:
    """The smallest threshold that rejects at most ``false_reject`` of ``good_scores``
    (scores at or above it are defects)."""
    s = np.sort(np.asarray(good_scores, np.float64))[::-1]
    if not len(s):
        raise ConfigError("no held-out good images to calibrate the threshold on; add good images")
    allowed = int(math.floor(false_reject * len(s) + 1e-9))
    edge = s[min(allowed, len(s) - 1)]
    # A hair above that score (a float32 score divided by it must stay under 1.0).
    return float(edge) * (1.0 + 1e-5) if allowed < len(s) else float(s[-1])


def auroc(scores: Sequence[float], is_defect: Sequence[bool]) -> Optional[float]:
    """Area under the ROC curve (ties count half); None without both good and defect images."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_defect, bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def roc_curve(scores: Sequence[float], is_defect: Sequence[bool]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, from the strictest threshold."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_defect, bool)
    thr = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([(s[y] >= t).mean() if y.any() else 0.0 for t in thr])
    fpr = np.array([(s[~y] >= t).mean() if (~y).any() else 0.0 for t in thr])
    return fpr, tpr, thr


def rates_at(scores: Sequence[float], is_defect: Sequence[bool], threshold: float) -> Dict[str, Any]:
    """Counts and rates with ``score >= threshold`` called a defect."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_defect, bool)
    flagged = s >= threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if tp + fn and tp + fp else None)
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "false_reject_rate": fp / (fp + tn) if fp + tn else None,
            "miss_rate": fn / (fn + tp) if fn + tp else None,
            "precision": precision, "recall": recall, "f1": f1}


def best_f1_threshold(scores: Sequence[float], is_defect: Sequence[bool]) -> Optional[float]:
    """The threshold (one of the scores) with the highest F1; None without defects."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_defect, bool)
    if not y.any():
        return None
    best, best_t = -1.0, None
    for t in np.unique(s[y]):
        f1 = rates_at(s, y, t)["f1"] or 0.0
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def anomaly_report(scores: Sequence[float], kinds: Sequence[str], threshold: float = 1.0) -> Dict[str, Any]:
    """The evaluation of an anomaly detector: image AUROC over all images and per defect kind
    (that kind against the good images), and counts and rates at ``threshold``.

    Args:
        scores: anomaly scores (1.0 = the calibrated threshold).
        kinds: ``ok`` (or ``good``) for good images, else the defect kind of each image.
    """
    s = np.asarray(scores, np.float64)
    kinds = [OK if k in (OK, "good") else k for k in kinds]
    y = np.array([k != OK for k in kinds], bool)
    per_kind: Dict[str, Any] = {}
    for kind in sorted({k for k in kinds if k != OK}):
        sel = np.array([k in (OK, kind) for k in kinds])
        hits = s[np.array([k == kind for k in kinds])]
        per_kind[kind] = {"images": int(len(hits)), "auroc": auroc(s[sel], y[sel]),
                          "caught": int((hits >= threshold).sum()),
                          "miss_rate": float((hits < threshold).mean()) if len(hits) else None}
    best = best_f1_threshold(s, y)
    return {"task": "anomaly", "images": int(len(s)), "good": int((~y).sum()), "defects": int(y.sum()),
            "auroc": auroc(s, y), "at_threshold": rates_at(s, y, threshold), "per_kind": per_kind,
            "best_f1": rates_at(s, y, best) if best is not None else None,
            "good_scores": _quantiles(s[~y]), "defect_scores": _quantiles(s[y])}


def _quantiles(s: np.ndarray) -> Optional[Dict[str, float]]:
    if not len(s):
        return None
    q = np.quantile(s, [0.0, 0.5, 0.95, 0.99, 1.0])
    return {k: round(float(v), 4) for k, v in zip(("min", "p50", "p95", "p99", "max"), q)}


def format_anomaly_report(report: Dict[str, Any]) -> str:
    """The report as the CLI prints it."""
    def pct(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{100 * v:.1f} %"

    at = report["at_threshold"]
    lines = [f"{report['images']} images: {report['good']} good, {report['defects']} defects",
             f"image AUROC {pct(report['auroc'])}",
             f"at threshold {at['threshold']:.3g}: false rejects {pct(at['false_reject_rate'])} ({at['fp']} of {at['fp'] + at['tn']} good), "
             f"missed defects {pct(at['miss_rate'])} ({at['fn']} of {at['fn'] + at['tp']}), F1 {'n/a' if at['f1'] is None else format(at['f1'], '.3f')}"]
    if report.get("best_f1"):
        b = report["best_f1"]
        lines.append(f"best F1 {b['f1']:.3f} at threshold {b['threshold']:.3g} (false rejects {pct(b['false_reject_rate'])}, missed {pct(b['miss_rate'])})")
    if report["per_kind"]:
        width = max(len("kind"), *(len(k) for k in report["per_kind"]))
        lines.append(f"{'kind':<{width}}  images  AUROC    caught")
        for kind, r in report["per_kind"].items():
            lines.append(f"{kind:<{width}}  {r['images']:>6}  {pct(r['auroc']):>7}  {r['caught']:>4} of {r['images']}")
    return "\n".join(lines)


def write_state(folder: Path, detector: Any) -> Dict[str, Dict[str, str]]:
    """Write a detector's arrays (or a bare scorer's) as ``anomaly/<role>.npy`` under ``folder``;
    returns model.json's ``files`` entry (file and sha256 per role)."""
    import hashlib

    from ..fsutil import write_bytes
    from .enroll_files import npy_bytes

    files: Dict[str, Dict[str, str]] = {}
    for role, arr in detector.arrays().items():
        data = npy_bytes(np.asarray(arr, np.float32))
        name = f"{STATE_DIR}/{role}.npy"
        (Path(folder) / STATE_DIR).mkdir(parents=True, exist_ok=True)
        write_bytes(Path(folder) / name, data)
        files[role] = {"file": name, "sha256": hashlib.sha256(data).hexdigest()}
    return files
