"""``edgesight train GOOD --task anomaly``: an anomaly detector learned from good images only.

The model is EfficientNet-Lite0 (ImageNet weights, frozen) cut after its stride-16 stage: the
stride-8 features (``block3b``) and stride-16 features (``block5c``), each averaged over a 3x3
neighbourhood as PatchCore aggregates patches, are brought to the stride-16 grid and stacked,
152 values per patch (a 14x14 grid at 224x224). Nothing is trained by gradient descent: the
scorer (:mod:`edgesight.edge.model.anomaly`) is fitted to the good images' patch features in
numpy, and its threshold is set on held-out good images for a chosen false-reject rate.

Run folder: ``model.keras`` (the feature model), ``model.json`` (``task: anomaly``, labels
``ok``/``defect``), ``anomaly/*.npy`` (the scorer of the float features), ``split.json`` (the
good images used to fit and to calibrate, the defect images), ``metrics.json``, and with
``--defects`` a ROC curve and a score histogram. ``edgesight convert`` quantises the feature
model and fits the scorer again on the int8 model's own features.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import ConfigError, DatasetError
from edgesight.edge.fsutil import replace_dir, write_json
from edgesight.edge.model.anomaly import ANOMALY_KEY, LABELS, TASK_KEY, AnomalyDetector
from edgesight.edge.model.anomaly_fit import anomaly_report, fit_scorer, format_anomaly_report, threshold_for, write_state
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, write_model_info

from .config import TrainConfig
from .data import Sample, unlabelled_images
from .rundir import OWNER_FILE

BACKBONE = "efficientnet_lite0"
STRIDE = 16
# At least this many held-out good images calibrate the threshold.
MIN_HOLDOUT = 10
SPLIT_FILE = "split.json"


def build_feature_model(height: int, width: int, channels: int = 3):
    """Raw pixels (0-255) in, the ``ceil(h/16) x ceil(w/16) x 152`` patch features out.

    Raises:
        ConfigError: the input size is not a multiple of 16 of at least 32.
    """
    from .efficientnet_lite import build_efficientnet_lite0, load_imagenet_weights
    from .tf import import_keras

    if height % STRIDE or width % STRIDE or min(height, width) < 32:
        raise ConfigError(f"--task anomaly needs an input size that is a multiple of 16 and at least 32, got {height}x{width}; "
                          "use e.g. --img-size 224 or 112")
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    if channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalize")(x)
    base = build_efficientnet_lite0((height, width, 3), include_top=False)
    load_imagenet_weights(base)
    trunk = keras.Model(base.input, [base.get_layer("block3b_add").output, base.get_layer("block5c_add").output], name="trunk")
    trunk.trainable = False
    fine, coarse = trunk(x, training=False)
    fine = layers.AveragePooling2D(3, 1, padding="same", name="fine_neighbourhood")(fine)
    fine = layers.AveragePooling2D(2, 2, name="fine_to_grid")(fine)
    coarse = layers.AveragePooling2D(3, 1, padding="same", name="coarse_neighbourhood")(coarse)
    features = layers.Concatenate(name="features")([fine, coarse])
    return keras.Model(inputs, features, name="anomaly_features")


def patch_features(model, paths: Sequence[str], spec: PreprocessSpec, batch: int = 32, desc: str = "features",
                   progress: bool = True, aligner: Any = None) -> np.ndarray:
    """``N x h x w x D`` float32 features of image files through a Keras feature model (each
    image aligned first when an ``aligner`` is given)."""
    import sys

    from tqdm import tqdm

    from .pipeline import inference_batch, load_batch

    batch = inference_batch(spec.height, spec.width, batch)
    out: List[np.ndarray] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True, leave=False, file=sys.stderr) as bar:
        for i in range(0, len(paths), batch):
            part = list(paths[i:i + batch])
            images = load_batch(part, spec)
            if aligner is not None:
                images = np.stack([aligner(im) for im in images])
            out.append(np.asarray(model(images.astype(np.float32), training=False), np.float32))
            bar.update(len(part))
    shape = tuple(int(s) for s in model.outputs[0].shape[1:])
    return np.concatenate(out) if out else np.zeros((0, *shape), np.float32)


def defect_samples(folder: Optional[Path]) -> List[Sample]:
    """Every image under ``folder``, labelled with its first sub-folder (the defect kind), or
    ``defect`` for images at the top; images under ``good/`` (or ``ok/``) are labelled
    ``good`` and join the held-out good images in the report."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--defects {folder}: not a folder; give a folder of defect images (sub-folders name the kinds)")
    root = folder.resolve()
    found = []
    for s in unlabelled_images(folder):
        rel = Path(s.path).relative_to(root)
        kind = rel.parts[0] if len(rel.parts) > 1 else "defect"
        found.append(Sample(s.path, "good" if kind in ("ok", "good") else kind))
    if not found:
        raise DatasetError(f"--defects {folder}: no readable images; give a folder of defect images or leave --defects out")
    return found


def split_good(paths: Sequence[str], holdout: float, seed: int) -> Tuple[List[str], List[str]]:
    """Good images to fit the scorer on and to calibrate its threshold on (at least
    ``MIN_HOLDOUT`` held out, and at least as many kept to fit)."""
    paths = sorted(paths)
    n = len(paths)
    n_hold = max(MIN_HOLDOUT, int(round(holdout * n)))
    if n - n_hold < 2:
        raise DatasetError(f"{n} good image(s): anomaly detection needs at least {MIN_HOLDOUT + 2} "
                           f"({MIN_HOLDOUT} held out to set the threshold); add good images")
    order = np.random.default_rng(seed).permutation(n)
    hold = sorted(paths[i] for i in order[:n_hold])
    return sorted(paths[i] for i in order[n_hold:]), hold


def fit_detector(method: str, fit_feats: np.ndarray, hold_feats: np.ndarray, cfg_false_reject: float, bank_size: int,
                 seed: int, grid: Tuple[int, int], hold_pixels: Any = None,
                 image_score: str = "max") -> Tuple[AnomalyDetector, np.ndarray]:
    """The scorer fitted on good features, its threshold set on held-out good features.

    Returns:
        ``(detector, held-out raw scores)``.
    """
    scorer = fit_scorer(method, fit_feats, bank_size=bank_size, seed=seed, grid=grid)
    probe = AnomalyDetector(scorer, 1.0, grid, cfg_false_reject, image_score=image_score)
    hold_scores, _ = probe.raw(hold_feats, hold_pixels)
    threshold = threshold_for(hold_scores, cfg_false_reject)
    if not threshold > 0:
        raise DatasetError("the held-out good images all score 0: the good images are identical; add real variety of good parts")
    return AnomalyDetector(scorer, threshold, grid, cfg_false_reject, image_score=image_score), np.asarray(hold_scores)


# ``--align auto`` aligns when the median ECC correlation of good images with their mean
# image is at least this: one part in about the same place (generated PCBs: 0.99; the ten
# Fashion-MNIST classes, different items of a kind: 0.72 to 0.95).
ALIGN_QUALITY = 0.97


def choose_aligner(mode: str, paths: Sequence[str], spec: PreprocessSpec) -> Tuple[Any, str]:
    """The aligner ``--align`` asks for (None for none) and the line that says why."""
    from edgesight.edge.model.align import Aligner, alignment_quality, fit_reference

    from .pipeline import load_batch

    if mode == "none":
        return None, "alignment: off (--align none)"
    sample = load_batch(list(paths[:100]), spec)
    ref = fit_reference(sample)
    quality = alignment_quality(sample[:50], ref)
    if mode == "auto" and (quality is None or quality < ALIGN_QUALITY):
        return None, (f"alignment: off (--align auto: the good images correlate {quality:.2f} with their mean image after aligning, "
                      f"under {ALIGN_QUALITY}: not one part in one place)")
    why = "--align euclidean" if mode == "euclidean" else f"--align auto: correlation {quality:.2f} with the mean good image"
    return Aligner(ref), f"alignment: each image is shifted and rotated onto the mean good image before scoring ({why})"


def training_images(cfg: TrainConfig, progress: bool = True) -> Tuple[List[str], List[str], List[str], List[Sample]]:
    """Check ``--out``, then the good images of ``cfg.data``: all of them, those to fit on, those
    held out for the threshold, and the ``--defects`` images.

    Raises:
        ConfigError: the run folder exists (without ``--overwrite``).
        DatasetError: no folder, no readable images, too few, or unusable ``--defects``.
    """
    from .rundir import check_out

    check_out(Path(cfg.out), cfg.overwrite)
    data = Path(cfg.data)
    if not data.is_dir():
        raise DatasetError(f"{data}: not a folder; give a folder of good images (any depth)")
    good = [s.path for s in unlabelled_images(data, progress=progress)]
    if not good:
        raise DatasetError(f"{data}: no readable images; give a folder of good images (any depth)")
    fit_paths, hold_paths = split_good(good, cfg.val_split + cfg.test_split, cfg.seed)
    return good, fit_paths, hold_paths, defect_samples(Path(cfg.defects) if cfg.defects else None)


def train_anomaly(cfg: TrainConfig, progress: bool = True):
    """Fit the detector on the good images of ``cfg.data`` and write the run folder."""
    from .rundir import TrainResult, prepare_run_dir

    t0 = time.time()
    height, width = cfg.input_size(224)
    spec = PreprocessSpec(height=height, width=width, color=cfg.color, resize=cfg.resize, interpolation=cfg.interpolation,
                          model_mean=(127.0,), model_std=(128.0,))
    out = Path(cfg.out)
    good, fit_paths, hold_paths, defects = training_images(cfg, progress)
    model = build_feature_model(height, width, spec.channels)
    grid = tuple(int(s) for s in model.outputs[0].shape[1:3])
    print(f"anomaly detection ({cfg.anomaly_method}) on {len(good)} good images: {len(fit_paths)} to learn from, "
          f"{len(hold_paths)} held out to set the threshold for {100 * cfg.false_reject:g} % false rejects"
          + (f"; {sum(s.label != 'good' for s in defects)} defect images for the report" if defects else ""))
    if len(hold_paths) * cfg.false_reject < 1:
        print(f"note: with {len(hold_paths)} held-out good images the threshold sits just above the highest of their scores; "
              f"measuring a {100 * cfg.false_reject:g} % false-reject rate needs {int(np.ceil(1 / cfg.false_reject))} or more")
    staging = prepare_run_dir(out, cfg.overwrite)
    t_feat = time.time()
    aligner, why = choose_aligner(cfg.align, fit_paths, spec)
    print(why)
    fit_feats = patch_features(model, fit_paths, spec, desc="good features", progress=progress, aligner=aligner)
    hold_feats = patch_features(model, hold_paths, spec, desc="held-out features", progress=progress, aligner=aligner)
    defect_feats = patch_features(model, [s.path for s in defects], spec, desc="defect features", progress=progress, aligner=aligner)
    t_fit = time.time()
    detector, hold_scores = fit_detector(cfg.anomaly_method, fit_feats, hold_feats, cfg.false_reject, cfg.memory_bank, cfg.seed, grid,
                                          image_score=cfg.image_score)
    detector.aligner = aligner
    seconds = {"features": round(t_fit - t_feat, 2), "fit": round(time.time() - t_fit, 2)}
    report = finish_run(staging, out, cfg, spec, model, detector, hold_paths, hold_scores,
                        defects, detector.raw(defect_feats)[0] if len(defects) else np.zeros(0), fit_paths, seconds, t0)
    return TrainResult(out, report, {}, False, time.time() - t0)


def finish_run(staging: Path, out: Path, cfg: TrainConfig, spec: PreprocessSpec, model, detector: AnomalyDetector,
               hold_paths: Sequence[str], hold_scores: np.ndarray, defects: Sequence[Sample], defect_scores: np.ndarray,
               fit_paths: Sequence[str], seconds: Dict[str, float], t0: float) -> Dict[str, Any]:
    """Write the run folder (model, model.json, scorer state, split, metrics, plots) and print the report."""
    from .callbacks import save_model
    from .plots import plot_anomaly_roc, plot_anomaly_scores

    cfg.save(staging / "config.yaml")
    files = write_state(staging, detector)
    info = ModelInfo(labels=LABELS, preprocess=spec, backbone=BACKBONE if cfg.anomaly_method != "autoencoder" else "autoencoder",
                     source={"run": str(out.resolve()), "data": str(Path(cfg.data).resolve()),
                             "weights": "none" if cfg.anomaly_method == "autoencoder" else "imagenet"})
    info = info.with_extra(**{TASK_KEY: "anomaly", ANOMALY_KEY: detector.section(files)})
    write_model_info(staging, info)
    write_json(staging / SPLIT_FILE, {"task": "anomaly", "fit": list(fit_paths), "holdout": list(hold_paths),
                                      "defects": [{"path": s.path, "kind": s.label} for s in defects]})
    save_model(model, staging)
    scores = np.r_[hold_scores, defect_scores] / detector.threshold
    kinds = ["good"] * len(hold_paths) + [s.label for s in defects]
    report = anomaly_report(scores, kinds, 1.0)
    report.update({"method": detector.method, "split": "holdout", "threshold_raw": detector.threshold,
                   "false_reject_target": cfg.false_reject, "fit_images": len(fit_paths), "grid": list(detector.grid),
                   "seconds": {**seconds, "total": round(time.time() - t0, 2)}})
    if report.get("best_f1"):
        report["best_f1"]["threshold"] = round(report["best_f1"]["threshold"], 4)
    write_json(staging / "metrics.json", report)
    plot_anomaly_scores(staging / "scores.png", scores, kinds, title="held-out good" + (" and defect images" if len(defects) else " images"))
    if len(defects):
        plot_anomaly_roc(staging / "roc.png", scores, kinds, title=f"{detector.method}: held-out good vs defects")
    (staging / OWNER_FILE).unlink(missing_ok=True)
    replace_dir(staging, out)
    print(format_anomaly_report(report))
    if not len(defects):
        print("no --defects given: the AUROC needs defect images; the threshold rests on the good images alone")
    elif report.get("best_f1"):
        print(f"to trade false rejects for misses, run with --anomaly-threshold (score 1.0 is this threshold; "
              f"{report['best_f1']['threshold']:.3g} gave the best F1 here)")
    print(f"run folder: {out} ({time.time() - t0:.0f} s); next: edgesight convert {out} --out MODEL_DIR")
    return report
