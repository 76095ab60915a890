"""``edgesight evaluate MODEL DATA`` for anomaly detectors.

DATA is a folder with ``good/`` and one sub-folder per defect kind (any depth below each); the
report gives the image AUROC over all of them and per kind, and the false-reject and miss
rates and F1 at the model's threshold. MODEL is an anomaly run (the float feature model,
through Keras) or an anomaly bundle (the int8 model and its scorer, through LiteRT, as on the
device). Without DATA a run is measured on its held-out good images and its defect images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgesight.edge.errors import DatasetError
from edgesight.edge.model.anomaly import is_anomaly
from edgesight.edge.model.anomaly_fit import anomaly_report, format_anomaly_report
from edgesight.edge.model.spec import ModelInfo, read_model_info

from .data import unlabelled_images

DEFAULT_PLOT = "anomaly_roc.png"


def anomaly_info(model: Path) -> Optional[ModelInfo]:
    """The model.json of an anomaly run or bundle (folder or its .tflite), else None."""
    folder = Path(model) if Path(model).is_dir() else Path(model).parent
    if not (folder / "model.json").is_file():
        return None
    try:
        info = read_model_info(folder)
    except Exception:  # not ours to judge here: the classifier path reports it
        return None
    return info if is_anomaly(info) else None


def labelled_images(data: Path) -> Tuple[List[str], List[str]]:
    """Images of DATA and their kinds (``good`` or a defect kind: the first sub-folder)."""
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"{data}: not a folder; give a folder with good/ and one sub-folder per defect kind")
    root = data.resolve()
    paths, kinds = [], []
    loose = 0
    for s in unlabelled_images(data):
        rel = Path(s.path).relative_to(root)
        if len(rel.parts) < 2:
            loose += 1
            continue
        paths.append(s.path)
        kinds.append("good" if rel.parts[0] in ("good", "ok") else rel.parts[0])
    if "good" not in kinds:
        raise DatasetError(f"{data}: no good/ sub-folder with images; put the good images in {data}/good and each defect kind in its own sub-folder")
    if loose:
        print(f"note: {loose} image(s) directly in {data} were left out: put them in good/ or a defect kind's folder")
    return paths, kinds


def run_images(run: Path) -> Tuple[List[str], List[str]]:
    """A run's held-out good images and its defect images (``--defects``)."""
    try:
        split = json.loads((Path(run) / "split.json").read_text())
        return list(split["holdout"]) + [d["path"] for d in split["defects"]], ["good"] * len(split["holdout"]) + [d["kind"] for d in split["defects"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{run}/split.json: missing or unreadable ({e}); give DATA (good/ and defect sub-folders)") from e


def scores_of(model: Path, info: ModelInfo, paths: List[str], progress: bool = True) -> np.ndarray:
    """Anomaly scores (1.0 = the threshold) of image files through a bundle or a run."""
    from edgesight.edge.model.anomaly import load_detector

    from .pipeline import load_batch

    model = Path(model)
    spec = info.preprocess
    folder = model if model.is_dir() else model.parent
    if (folder / "model.keras").is_file() and not (folder / "model.tflite").is_file():
        from .anomaly import patch_features
        from .evaluate import load_keras_model

        detector = load_detector(folder, info)
        keras_model = load_keras_model(folder / "model.keras")
        if detector.method == "autoencoder":
            pixels = load_batch(paths, spec)
            recon = np.concatenate([np.asarray(keras_model(pixels[i:i + 32].astype(np.float32), training=False)) for i in range(0, len(pixels), 32)])
            return detector.raw(recon, pixels)[0] / detector.threshold
        return detector.raw(patch_features(keras_model, paths, spec, desc="scoring", progress=progress, aligner=detector.aligner))[0] / detector.threshold
    from edgesight.edge.classifier import Classifier

    with Classifier(folder) as clf:
        return np.array([clf(p).score for p in paths], np.float64)


def evaluate_anomaly(model: Path, data: Optional[Path], json_out: Optional[Path], plot: Optional[Path], info: ModelInfo) -> Dict[str, Any]:
    """Score DATA (or the run's own held-out images), print and save the report and the ROC plot."""
    from edgesight.edge.fsutil import write_json

    paths, kinds = labelled_images(data) if data is not None else run_images(model)
    scores = scores_of(model, info, paths)
    report = anomaly_report(scores, kinds, 1.0)
    report.update({"data": str(data) if data is not None else "holdout", "model": str(model)})
    print(format_anomaly_report(report))
    if json_out:
        write_json(json_out, report)
        print(f"wrote {json_out}")
    if report["defects"]:
        from .plots import plot_anomaly_roc

        run_dir = Path(model) if Path(model).is_dir() and (Path(model) / "model.keras").is_file() else None
        target = plot or (run_dir / DEFAULT_PLOT if run_dir is not None else Path(DEFAULT_PLOT))
        plot_anomaly_roc(target, scores, kinds, title=f"{Path(model).name} on {Path(data).name if data else 'its held-out images'}")
        print(f"wrote {target}")
    return report
