"""Anomaly detection from good parts only: the scoring that runs on the device, in numpy.

An anomaly bundle's model maps an image to a grid of patch features (``h x w x D``, int8,
dequantised here). The scorer gives every patch a distance from what good parts look like at
that place, and the image the largest patch distance:

- ``patchcore``: Euclidean distance to the nearest of a memory bank of good patch features
  (subsampled by greedy k-centre coreset), as in PatchCore (Roth et al., CVPR 2022);
- ``padim``: Mahalanobis distance to a Gaussian fitted to the good patches of each grid
  location, as in PaDiM (Defard et al., ICPR 2021), its covariance shrunk by the Ledoit-Wolf
  amount (``anomaly_fit.fit_padim``);
- ``autoencoder``: the model reconstructs the image; the patch score is the reconstruction
  error, averaged over each cell of the grid.

Scores are divided by the threshold calibrated on held-out good images, so ``1.0`` is the line
between ``ok`` and ``defect`` at the bundle's false-reject rate, whatever the method::

    bundle/
      model.tflite  model.json  labels.txt ("ok", "defect")
      anomaly/bank.npy                          patchcore: M x D float32
      anomaly/mean.npy  anomaly/inv_cov.npy     padim: P x D and P x D x D float32 (P = h*w)

    model.json: "task": "anomaly",
                "anomaly": {"method": "patchcore", "grid": [h, w], "features": D,
                            "threshold": RAW, "false_reject": 0.01, "image_score": "max",
                            "files": {"bank": {"file": "anomaly/bank.npy", "sha256": ...}}}

Every file is read with ``allow_pickle=False`` and checked against its sha256 like the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import BundleError

TASK_KEY, ANOMALY_KEY = "task", "anomaly"
ANOMALY_TASK = "anomaly"
OK, DEFECT = "ok", "defect"
LABELS = (OK, DEFECT)
METHODS = ("patchcore", "padim", "autoencoder")
STATE_DIR = "anomaly"
# The arrays each method keeps, by role.
STATE_FILES = {"patchcore": ("bank",), "padim": ("mean", "inv_cov"), "autoencoder": ()}


def is_anomaly(info: Any) -> bool:
    """True for a model.json (``ModelInfo``) of an anomaly detector."""
    return getattr(info, "extra", {}).get(TASK_KEY) == ANOMALY_TASK


class PatchCoreScorer:
    """Nearest-neighbour distance of each patch to a memory bank of good patches."""

    method = "patchcore"

    def __init__(self, bank: np.ndarray) -> None:
        self.bank = np.ascontiguousarray(bank, np.float32)
        self._bank_t = np.ascontiguousarray(self.bank.T)
        self._bank_sq = (self.bank ** 2).sum(1)

    @property
    def features(self) -> int:
        return int(self.bank.shape[1])

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"bank": self.bank}

    def patch_scores(self, features: np.ndarray, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        """``(..., h, w, D)`` features -> ``(..., h, w)`` distances to the nearest bank entry."""
        f = np.asarray(features, np.float32)
        q = f.reshape(-1, f.shape[-1])
        out = np.empty(len(q), np.float32)
        step = 4096  # bounds the distance matrix at 4096 x M floats
        for i in range(0, len(q), step):
            part = q[i:i + step]
            d2 = part @ self._bank_t
            d2 *= -2.0
            d2 += self._bank_sq
            out[i:i + step] = d2.min(axis=1) + (part ** 2).sum(1)
        return np.sqrt(np.maximum(out, 0.0)).reshape(f.shape[:-1])


class PadimScorer:
    """Mahalanobis distance of each patch to the Gaussian of good patches at its location."""

    method = "padim"

    def __init__(self, mean: np.ndarray, inv_cov: np.ndarray) -> None:
        self.mean = np.ascontiguousarray(mean, np.float32)
        self.inv_cov = np.ascontiguousarray(inv_cov, np.float32)

    @property
    def features(self) -> int:
        return int(self.mean.shape[1])

    def arrays(self) -> Dict[str, np.ndarray]:
        return {"mean": self.mean, "inv_cov": self.inv_cov}

    def patch_scores(self, features: np.ndarray, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        f = np.asarray(features, np.float32)
        lead = f.shape[:-3]
        diff = f.reshape(-1, self.mean.shape[0], self.mean.shape[1]) - self.mean
        m = np.einsum("npd,pde,npe->np", diff, self.inv_cov, diff, optimize=True)
        return np.sqrt(np.maximum(m, 0.0)).reshape(*lead, *f.shape[-3:-1])


class ReconstructionScorer:
    """Squared reconstruction error of an autoencoder, averaged over each cell of the grid."""

    method = "autoencoder"

    def __init__(self, grid: Tuple[int, int]) -> None:
        self.grid = (int(grid[0]), int(grid[1]))

    features = 0

    def arrays(self) -> Dict[str, np.ndarray]:
        return {}

    def patch_scores(self, features: np.ndarray, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        """``features``: the reconstruction (``..., H, W, C`` in [0, 1]); ``pixels``: the uint8 input."""
        if pixels is None:
            raise ValueError("the autoencoder's score needs the input pixels")
        rec = np.asarray(features, np.float32)
        src = np.asarray(pixels, np.float32).reshape(rec.shape) / 255.0
        err = ((rec - src) ** 2).mean(-1)
        gh, gw = self.grid
        h, w = err.shape[-2:]
        cells = err[..., : h - h % gh, : w - w % gw].reshape(*err.shape[:-2], gh, h // gh, gw, w // gw)
        return cells.mean(axis=(-3, -1))


def make_scorer(method: str, arrays: Mapping[str, np.ndarray], grid: Tuple[int, int]):
    if method == "patchcore":
        return PatchCoreScorer(arrays["bank"])
    if method == "padim":
        return PadimScorer(arrays["mean"], arrays["inv_cov"])
    if method == "autoencoder":
        return ReconstructionScorer(grid)
    raise BundleError(f"anomaly method {method!r} is not one of {', '.join(METHODS)}")


IMAGE_SCORES = ("max", "mean")


def image_scores(patch_maps: np.ndarray, how: str = "max") -> np.ndarray:
    """The image score (``(..., h, w)`` -> ``(...)``): the largest patch score (``max``: a
    defect anywhere), or their mean (``mean``: the whole image unlike the good ones, e.g. another
    kind of item)."""
    m = np.asarray(patch_maps, np.float32)
    flat = m.reshape(*m.shape[:-2], -1)
    return flat.mean(-1) if how == "mean" else flat.max(-1)


@dataclass
class AnomalyDetector:
    """A scorer and its threshold: features in, ``(score, heatmap)`` out, 1.0 = the threshold."""

    scorer: Any
    threshold: float
    grid: Tuple[int, int]
    false_reject: Optional[float] = None
    aligner: Any = None  # an edgesight.edge.model.align.Aligner, applied to the pixels before the model
    image_score: str = "max"

    def arrays(self) -> Dict[str, np.ndarray]:
        """The state to store: the scorer's arrays and the alignment reference."""
        return {**self.scorer.arrays(), **({"reference": self.aligner.reference} if self.aligner is not None else {})}

    @property
    def method(self) -> str:
        return self.scorer.method

    def raw(self, features: np.ndarray, pixels: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Raw image scores and patch maps of one or more images' outputs."""
        maps = self.scorer.patch_scores(features, pixels)
        return image_scores(maps, self.image_score), maps

    def score(self, features: np.ndarray, pixels: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
        """One image: its anomaly score and its ``h x w`` heatmap, both over the threshold."""
        s, m = self.raw(features, pixels)
        return float(s) / self.threshold, m / self.threshold

    def section(self, files: Mapping[str, Mapping[str, str]], **extra: Any) -> Dict[str, Any]:
        """model.json's ``anomaly`` entry for this detector."""
        return {"method": self.method, "grid": list(self.grid), "features": int(self.scorer.features),
                "threshold": float(self.threshold), "false_reject": self.false_reject, "image_score": self.image_score,
                "align": "euclidean" if self.aligner is not None else "none",
                "files": {k: dict(v) for k, v in files.items()}, **extra}


class AnomalyDecider:
    """Anomaly scores -> ``ok``/``defect``, with the same smoothing the classifier's labels get.

    Args:
        threshold: the score (1.0 = the calibrated threshold) at or above which a frame is a defect.
        smooth: frames whose scores are averaged (``--smooth N``).
        hysteresis: once a defect, the label stays until the score drops below
            ``threshold * (1 - hysteresis)`` (with smoothing only).
    """

    labels = list(LABELS)

    def __init__(self, threshold: float = 1.0, smooth: int = 1, hysteresis: float = 0.1) -> None:
        self.threshold = float(threshold)
        self.window = max(1, int(smooth))
        self.hysteresis = float(hysteresis) if self.window > 1 else 0.0
        self._recent: List[float] = []
        self.last_label: Optional[str] = None

    def __call__(self, scores: np.ndarray) -> Tuple[str, float, List[Tuple[str, float]], bool]:
        """``scores``: a one-element array, this frame's anomaly score. Returns
        ``(label, score, top_k, changed)``; the score is the smoothed anomaly score."""
        raw = float(np.asarray(scores).reshape(-1)[0])
        self._recent.append(raw)
        del self._recent[: -self.window]
        score = float(np.mean(self._recent))
        line = self.threshold * (1.0 - self.hysteresis) if self.last_label == DEFECT else self.threshold
        label = DEFECT if score >= line else OK
        changed = label != self.last_label
        self.last_label = label
        return label, score, [(label, raw)], changed


def _number(value: Any, where: str, key: str, positive: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or (positive and v <= 0):
        raise BundleError(f"{where}: anomaly.{key} is {value!r}, not a positive number; re-run 'edgesight convert' on the run")
    return v


def load_detector(root: Path, info: Any, verify: bool = True, json_path: Optional[Path] = None) -> AnomalyDetector:
    """The detector a bundle (or run folder) describes in model.json's ``anomaly``.

    Raises:
        BundleError: a missing or malformed entry, a file outside the folder, altered
            (sha256), not a plain ``.npy``, or of the wrong shape or values.
    """
    from .enroll_files import inside_bundle, read_npy

    root = Path(root)
    json_path = json_path or root / "model.json"
    where = str(json_path)
    sec = info.extra.get(ANOMALY_KEY)
    if not isinstance(sec, Mapping):
        raise BundleError(f"{where}: task is anomaly but there is no 'anomaly' entry; re-run 'edgesight convert' on the run")
    method = sec.get("method")
    if method not in METHODS:
        raise BundleError(f"{where}: anomaly.method is {method!r}, not one of {', '.join(METHODS)}; re-run 'edgesight convert'")
    grid = sec.get("grid")
    if not (isinstance(grid, (list, tuple)) and len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid)):
        raise BundleError(f"{where}: anomaly.grid is {grid!r}, not [height, width]; re-run 'edgesight convert'")
    threshold = _number(sec.get("threshold"), where, "threshold")
    files = sec.get("files") if isinstance(sec.get("files"), Mapping) else {}
    arrays: Dict[str, np.ndarray] = {}
    for role in STATE_FILES[method]:
        entry = files.get(role)
        if not isinstance(entry, Mapping):
            raise BundleError(f"{where}: anomaly.files.{role} is missing; copy the whole bundle again or re-run 'edgesight convert'")
        path = inside_bundle(root, entry.get("file"), json_path, f"anomaly.files.{role}.file")
        arr = read_npy(path, entry.get("sha256"), verify, json_path, f"anomaly.files.{role}.sha256")
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise BundleError(f"{path}: holds {arr.dtype} values{' that are not all finite' if arr.dtype.kind == 'f' else ''}, not the scorer's floats; copy the bundle again")
        arrays[role] = arr.astype(np.float32, copy=False)
    _check_shapes(method, arrays, tuple(grid), sec.get("features"), where)
    aligner = None
    if sec.get("align", "none") != "none":
        from .align import Aligner

        entry = files.get("reference")
        if sec.get("align") != "euclidean" or not isinstance(entry, Mapping):
            raise BundleError(f"{where}: anomaly.align is {sec.get('align')!r} without its reference file; copy the whole bundle again")
        path = inside_bundle(root, entry.get("file"), json_path, "anomaly.files.reference.file")
        try:
            aligner = Aligner(read_npy(path, entry.get("sha256"), verify, json_path, "anomaly.files.reference.sha256"))
        except ValueError as e:
            raise BundleError(f"{path}: {e}; copy the whole bundle again") from e
    how = sec.get("image_score", "max")
    if how not in IMAGE_SCORES:
        raise BundleError(f"{where}: anomaly.image_score is {how!r}, not one of {', '.join(IMAGE_SCORES)}; re-run 'edgesight convert'")
    fr = sec.get("false_reject")
    return AnomalyDetector(make_scorer(method, arrays, tuple(grid)), threshold, tuple(grid),
                           float(fr) if isinstance(fr, (int, float)) else None, aligner, how)


def _check_shapes(method: str, arrays: Mapping[str, np.ndarray], grid: Tuple[int, int], features: Any, where: str) -> None:
    p = grid[0] * grid[1]
    if method == "patchcore":
        bank = arrays["bank"]
        ok = bank.ndim == 2 and bank.shape[0] >= 1 and bank.shape[1] == features
        shape = f"M x {features}"
        got = {"bank": bank.shape}
    elif method == "padim":
        mean, icov = arrays["mean"], arrays["inv_cov"]
        ok = mean.shape == (p, features) and icov.shape == (p, features, features)
        shape = f"{p} x {features} and {p} x {features} x {features}"
        got = {"mean": mean.shape, "inv_cov": icov.shape}
    else:
        return
    if not ok:
        raise BundleError(f"{where}: anomaly arrays {', '.join(f'{k} {tuple(v)}' for k, v in got.items())} do not fit the "
                          f"{grid[0]}x{grid[1]} grid of {features} features (expected {shape}); copy the whole bundle again")


def check_output(detector: AnomalyDetector, shape: Sequence[int], where: str) -> None:
    """Refuse a model whose output does not fit the detector (grid and features)."""
    shape = tuple(int(s) for s in shape)
    if detector.method == "autoencoder":
        if len(shape) != 4 or shape[1] % detector.grid[0] or shape[2] % detector.grid[1]:
            raise BundleError(f"{where}: the model's output {shape} is not an image the {detector.grid[0]}x{detector.grid[1]} grid divides; "
                              "copy the whole bundle again or re-run 'edgesight convert'")
        return
    want = (1, *detector.grid, detector.scorer.features)
    if shape != want:
        raise BundleError(f"{where}: the model's output is {shape} but model.json's anomaly scorer expects {want}; "
                          "copy the whole bundle again or re-run 'edgesight convert'")


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, box: Optional[Tuple[int, int, int, int]] = None,
                    alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (1.0 = the threshold; colour saturates at 2.0) onto ``image`` in place,
    over ``box`` (x, y, w, h: the region the model saw) or the whole frame."""
    import cv2

    x, y, w, h = box if box is not None else (0, 0, image.shape[1], image.shape[0])
    if w <= 0 or h <= 0:
        return image
    level = np.clip(np.asarray(heat, np.float32) / 2.0, 0.0, 1.0)
    colour = cv2.applyColorMap(cv2.resize((level * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLORMAP_JET)
    region = image[y:y + h, x:x + w]
    cv2.addWeighted(colour[: region.shape[0], : region.shape[1]], alpha, region, 1.0 - alpha, 0.0, dst=region)
    return image
