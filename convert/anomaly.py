"""``edgesight convert RUN`` for an anomaly run (``train --task anomaly``).

The feature model is quantised like a classifier (int8, calibrated on the run's good images),
then the scorer is fitted again on the int8 model's own features of the same good images and
its threshold set again on the same held-out good images: the device scores exactly what it
computes. The report compares the float and int8 detectors on the held-out good images and the
run's defect images: image AUROC (when there are defects), the ok/defect decisions at the
threshold, and the rank correlation of the scores.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from edgesight.edge import __version__
from edgesight.edge.errors import BundleError, ConfigError
from edgesight.edge.fsutil import write_bytes, write_json
from edgesight.edge.model.anomaly import ANOMALY_KEY, AnomalyDetector, load_detector
from edgesight.edge.model.anomaly_fit import anomaly_report, auroc, threshold_for, write_state
from edgesight.edge.model.anomaly_model import AnomalyModel
from edgesight.edge.model.spec import ModelInfo, read_model_info

from .config import ConvertConfig
from .convert import ConversionResult, check_out, convert_source, format_conversion_report, save_bundle

SPLIT_FILE = "split.json"


def is_anomaly_run(source: Path) -> bool:
    """True for a run folder of ``train --task anomaly``."""
    try:
        return Path(source).is_dir() and json.loads((Path(source) / "model.json").read_text()).get("task") == "anomaly"
    except (OSError, ValueError, AttributeError):
        return False


def _int8_outputs(model: AnomalyModel, images: np.ndarray) -> np.ndarray:
    out = []
    for img in images:
        model.set_pixels(img)
        model.invoke()
        out.append(model.features())
    return np.stack(out) if out else np.zeros((0,), np.float32)


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra = np.argsort(np.argsort(np.asarray(a)))
    rb = np.argsort(np.argsort(np.asarray(b)))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(ra) > 1 else 1.0


def convert_anomaly(source: Path, out: Path, cfg: ConvertConfig, progress: bool = True) -> ConversionResult:
    """Quantise an anomaly run's model, refit its scorer on the int8 features, verify, write the bundle.

    Raises:
        ConfigError: options that do not apply to an anomaly detector (``--edgetpu``, a float mode).
        BundleError: the run is incomplete.
    """
    from tqdm import tqdm

    from edgesight.training.evaluate import load_keras_model
    from edgesight.training.pipeline import load_batch
    from edgesight.training.config import TrainConfig
    from edgesight.edge.model.anomaly_fit import fit_scorer

    from .quantize import captured_native_output, convert_keras

    t0 = time.time()
    source, out = Path(source), Path(out)
    if cfg.edgetpu:
        raise ConfigError("--edgetpu: anomaly bundles run on the CPU (their scorer is numpy); leave out --edgetpu")
    if cfg.quant != "int8":
        raise ConfigError(f"--quant {cfg.quant}: anomaly bundles are int8 (the scorer is fitted to the int8 features); leave out --quant")
    check_out(out, source, True)
    info = read_model_info(source)
    float_detector = load_detector(source, info)
    try:
        split = json.loads((source / SPLIT_FILE).read_text())
        fit_paths, hold_paths = list(split["fit"]), list(split["holdout"])
        defects = [(d["path"], d["kind"]) for d in split.get("defects", [])]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{source / SPLIT_FILE}: missing or unreadable ({e}); train the run again") from e
    train_cfg = TrainConfig.from_yaml(source / "config.yaml") if (source / "config.yaml").is_file() else TrainConfig()
    model = load_keras_model(source / "model.keras")
    spec = info.preprocess
    rng = np.random.default_rng(cfg.seed)
    calib_paths = [fit_paths[i] for i in sorted(rng.choice(len(fit_paths), min(cfg.num_calib, len(fit_paths)), replace=False))]
    with captured_native_output(what="converting") as (stream, converter_log):
        with tqdm(total=len(calib_paths), desc="calibrating", unit="img", file=stream, disable=None if progress else True, leave=False) as bar:
            tflite = convert_keras(model, cfg, load_batch(calib_paths, spec), progress=bar.update)
        float_bytes = convert_keras(model, ConvertConfig.float32())
    detector0 = AnomalyDetector(float_detector.scorer, 1.0, float_detector.grid, aligner=float_detector.aligner)
    qmodel = AnomalyModel(tflite, detector0, input_mean=spec.input_mean[0], input_std=spec.input_std[0])
    eval_paths = hold_paths + [p for p, _ in defects]
    kinds = ["good"] * len(hold_paths) + [k for _, k in defects]

    def outputs(paths: List[str], desc: str, keep_pixels: bool) -> tuple:
        feats, pixels = [], []
        with tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True, leave=False) as bar:
            for i in range(0, len(paths), 64):
                imgs = load_batch(paths[i:i + 64], spec)
                feats.append(_int8_outputs(qmodel, imgs))
                if keep_pixels:  # the autoencoder's score compares its output with them
                    pixels.append(imgs)
                bar.update(len(imgs))
        return np.concatenate(feats), (np.concatenate(pixels) if pixels else None)

    fit_feats, _ = outputs(fit_paths, "int8 features of the good images", False)
    eval_feats, eval_pixels = outputs(eval_paths, "int8 features of held-out and defect images", True)
    t_fit = time.time()
    scorer = fit_scorer(float_detector.method, fit_feats, bank_size=train_cfg.memory_bank, seed=train_cfg.seed, grid=float_detector.grid)
    probe = AnomalyDetector(scorer, 1.0, float_detector.grid, image_score=float_detector.image_score)
    q_raw = probe.raw(eval_feats, eval_pixels)[0]
    q_threshold = threshold_for(q_raw[: len(hold_paths)], train_cfg.false_reject)
    detector = AnomalyDetector(scorer, q_threshold, float_detector.grid, train_cfg.false_reject, float_detector.aligner,
                               float_detector.image_score)
    fit_seconds = time.time() - t_fit
    # The float detector on the same images, through Keras.
    from edgesight.training.anomaly import patch_features

    f_raw = float_detector.raw(patch_features(model, eval_paths, spec, desc="float features", progress=progress, aligner=float_detector.aligner), eval_pixels)[0] \
        if float_detector.method != "autoencoder" else _float_reconstruction_scores(model, float_detector, eval_pixels)
    f_scores, q_scores = np.asarray(f_raw) / float_detector.threshold, np.asarray(q_raw) / q_threshold
    y = np.array([k != "good" for k in kinds])
    f_auc, q_auc = auroc(f_scores, y), auroc(q_scores, y)
    agreement = float(np.mean((f_scores >= 1.0) == (q_scores >= 1.0))) if len(kinds) else 1.0
    drop = (f_auc - q_auc) * 100 if f_auc is not None and q_auc is not None else None
    changed = (1.0 - agreement) * 100
    report: Dict[str, Any] = {
        "task": "anomaly", "method": detector.method, "mode": "int8", "io": cfg.io, "config": cfg.to_dict(),
        "calibration_images": len(calib_paths), "fit_images": len(fit_paths), "holdout_images": len(hold_paths),
        "defect_images": int(y.sum()),
        "float_auroc": f_auc, "quant_auroc": q_auc, "auroc_drop_pp": drop, "decision_agreement": agreement,
        "score_rank_correlation": _spearman(f_scores, q_scores) if len(kinds) > 1 else None,
        "threshold_float": float_detector.threshold, "threshold_int8": q_threshold,
        "float_size_bytes": len(float_bytes), "size_bytes": len(tflite), "size_ratio": round(len(tflite) / max(1, len(float_bytes)), 2),
        "max_drop_pp": cfg.max_drop,
        "passed": (drop if drop is not None else changed) <= cfg.max_drop,
        "int8": anomaly_report(q_scores, kinds, 1.0), "fit_seconds": round(fit_seconds, 2),
        "input": qmodel.input.to_dict(), "output": qmodel.output_tensor.to_dict(), "toolkit_version": __version__,
    }

    def finish(staging: Path) -> None:
        files = write_state(staging, detector)
        binfo = ModelInfo(
            labels=info.labels, preprocess=spec, backbone=info.backbone, output="scores", toolkit_version=__version__,
            source={**info.source, "run": str(source.resolve()), "model": str((source / "model.keras").resolve())},
            extra={"task": "anomaly", ANOMALY_KEY: detector.section(files), "model_file": "model.tflite",
                   "sha256": hashlib.sha256(tflite).hexdigest(),
                   "quantization": {"mode": "int8", "per_channel": not cfg.per_tensor, "input": qmodel.input.to_dict(),
                                    "output": qmodel.output_tensor.to_dict()}})
        from edgesight.edge.model.spec import write_model_info

        write_model_info(staging, binfo)
        write_bytes(staging / "converter.log", "".join(converter_log).encode("utf-8"))
        try:
            from edgesight.training.plots import plot_anomaly_roc

            if y.any():
                plot_anomaly_roc(staging / "roc.png", q_scores, kinds, title=f"int8 {detector.method}: held-out good vs defects")
        except ImportError:
            pass
        report["seconds"] = round(time.time() - t0, 2)
        write_json(staging / "conversion_report.json", report)

    placeholder = ModelInfo(labels=info.labels, preprocess=spec)
    save_bundle(out, tflite, placeholder, finish)
    return ConversionResult(out, report, report["passed"])


def _float_reconstruction_scores(model, detector: AnomalyDetector, pixels: np.ndarray) -> np.ndarray:
    recon = np.concatenate([np.asarray(model(pixels[i:i + 32].astype(np.float32), training=False)) for i in range(0, len(pixels), 32)])
    return detector.raw(recon, pixels)[0]


def format_anomaly_conversion(report: Dict[str, Any]) -> str:
    """The terminal summary of an anomaly conversion."""
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f} %"

    mb = lambda n: f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"  # noqa: E731
    lines = [f"{'':<22}{'keras':>10}{'int8':>12}",
             f"{'image AUROC':<22}{pct(report['float_auroc']):>10}{pct(report['quant_auroc']):>12}"
             + (f"   ({-report['auroc_drop_pp'] + 0.0:+.2f} pp)" if report["auroc_drop_pp"] is not None else "   (no defect images)"),
             f"{'ok/defect agreement':<22}{'':>10}{pct(report['decision_agreement']):>12}",
             f"{'size (.tflite)':<22}{mb(report['float_size_bytes']):>10}{mb(report['size_bytes']):>12}   ({report['size_ratio']:.2f}x)"]
    at = report["int8"]["at_threshold"]
    lines.append(f"int8 threshold set again on {report['holdout_images']} held-out good images: false rejects {pct(at['false_reject_rate'])}"
                 + (f", missed defects {pct(at['miss_rate'])} of {report['defect_images']}" if report["defect_images"] else ""))
    lines.append(f"scorer ({report['method']}) fitted to the int8 features of {report['fit_images']} good images; "
                 f"calibrated on {report['calibration_images']}")
    return "\n".join(lines)


def convert_any(source: Path, out: Path, cfg: ConvertConfig, progress: bool = True, verbose: bool = False) -> ConversionResult:
    """``convert_source`` for a classifier, :func:`convert_anomaly` for an anomaly run."""
    if is_anomaly_run(Path(source)):
        return convert_anomaly(Path(source), Path(out), cfg, progress)
    return convert_source(Path(source), Path(out), cfg, progress=progress, verbose=verbose)


def format_report(report: Dict[str, Any]) -> str:
    """The terminal summary of either kind of conversion."""
    return format_anomaly_conversion(report) if report.get("task") == "anomaly" else format_conversion_report(report)
