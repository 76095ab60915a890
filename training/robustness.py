"""Robustness report: accuracy under image corruptions at five severities, float and int8 side by side.

The evaluation images are decoded at each model's input size, corrupted by the plain functions of
:mod:`.corruptions` (deterministic per image, so every model sees the same corrupted pixels) and
predicted by the Keras model and/or the TFLite bundle through the device runtime's interpreter.
Images are processed in chunks, so memory stays flat however large the evaluation set is.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import BundleError, DatasetError
from edgesight.edge.fsutil import write_json
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt_batch, corruption_names
from .data import Sample

Progress = Callable[[int], None]
CHUNK = 256


@dataclass(frozen=True)
class Contender:
    """A model under test.

    Attributes:
        name: its column in the report (``float``, or the bundle's quantisation, e.g. ``int8``).
        source: the path it was loaded from.
        spec: its preprocessing spec (input size and colour of the images it is given).
        predict: ``predict(uint8 NxHxWxC images, progress) -> NxK probabilities``.
    """

    name: str
    source: str
    spec: PreprocessSpec
    predict: Callable[[np.ndarray, Progress], np.ndarray]


def keras_contender(model, info: ModelInfo, source: Path, batch_size: int = 64) -> Contender:
    """The float Keras model; it takes raw 0-255 pixels and normalises inside."""

    from .pipeline import inference_batch

    def predict(images: np.ndarray, progress: Progress) -> np.ndarray:
        batch = inference_batch(images.shape[1], images.shape[2], batch_size)
        probs = np.asarray(model.predict(images.astype(np.float32), batch_size=batch, verbose=0))
        progress(len(images))
        return probs

    return Contender("float", str(source), info.preprocess, predict)


def tflite_contender(model_path: Path, info: ModelInfo, source: Path) -> Contender:
    """A .tflite model through the device runtime's interpreter, named by its quantisation."""
    from edgesight.edge.model.interpreter import TFLiteClassifier

    spec = info.preprocess
    clf = TFLiteClassifier(model_path, num_threads=os.cpu_count(), output=info.output, input_mean=spec.input_mean[0], input_std=spec.input_std[0])
    mode = (info.extra.get("quantization") or {}).get("mode") or ("int8" if clf.input.quantized else "tflite")
    return Contender(str(mode), str(source), spec, lambda images, progress: clf.predict_batch(images, progress))


def contenders_for(model, info: ModelInfo, source: Path, bundle: Optional[Path] = None, labels: Optional[Path] = None,
                   batch_size: int = 64) -> List[Contender]:
    """The models to compare: MODEL (a Keras model or a .tflite path) and an optional ``--bundle``.

    Raises:
        BundleError: ``--bundle`` given with a bundle as MODEL, or with other labels than MODEL.
    """
    if isinstance(model, (str, Path)):
        if bundle is not None:
            raise BundleError(f"{source}: is already a TFLite model; give its run folder or .keras file as MODEL to compare it with --bundle {bundle}")
        return [tflite_contender(Path(model), info, source)]
    models = [keras_contender(model, info, source, batch_size)]
    if bundle is not None:
        from edgesight.edge.model.bundle import labels_arg, load_bundle
        from .evaluate import is_tflite_source

        if not is_tflite_source(bundle):
            raise BundleError(f"--bundle {bundle}: not a model bundle or .tflite file; give the folder written by 'edgesight convert'")
        b = load_bundle(bundle, labels_arg(labels) if Path(bundle).suffix.lower() == ".tflite" else None)
        if tuple(b.info.labels) != tuple(info.labels):
            raise BundleError(f"--bundle {bundle}: its labels ({', '.join(b.info.labels)}) differ from {source}'s ({', '.join(info.labels)}); "
                              "give the bundle converted from this model")
        models.append(tflite_contender(b.model_path, b.info, bundle))
    names = [m.name for m in models]
    if len(set(names)) < len(names):
        models[-1] = Contender(f"{models[-1].name} (bundle)", models[-1].source, models[-1].spec, models[-1].predict)
    return models


def _corrupt_parallel(pool: ThreadPoolExecutor, workers: int, images: np.ndarray, name: str, severity: int, seed: int, start: int) -> np.ndarray:
    # OpenCV releases the GIL, so threads share the work; each image's generator depends only on
    # its global index, so the split does not change the result.
    parts = max(1, min(workers, len(images) // 16))
    bounds = np.linspace(0, len(images), parts + 1).astype(int)
    jobs = [pool.submit(corrupt_batch, images[a:b], name, severity, seed, start + a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return np.concatenate([j.result() for j in jobs]) if jobs else images.copy()


def robustness_report(contenders: Sequence[Contender], labels: Sequence[str], samples: Sequence[Sample],
                      corruptions: Optional[Sequence[str]] = None, seed: int = 0, progress: bool = True,
                      chunk: int = CHUNK) -> Dict[str, Any]:
    """Accuracy of every contender on ``samples``, clean and under every corruption and severity.

    Args:
        contenders: the models (see :func:`contenders_for`).
        labels: the models' class names, in output order.
        samples: labelled images.
        corruptions: names from :data:`~.corruptions.CORRUPTIONS` (default: all).
        seed: seed of the random parts of the corruptions.
        progress: show a progress bar (on a terminal).
        chunk: images decoded and corrupted at a time.

    Returns:
        ``num_samples``, ``seed``, ``severities``, ``corruptions`` (what each severity means) and
        ``models``: per contender ``clean_accuracy``, ``accuracy`` (corruption -> accuracy per
        severity), ``mean_by_corruption``, ``mean_by_severity``, ``worst_by_severity`` and
        ``mean_corruption_accuracy`` (the mean over every corruption and severity).

    Raises:
        DatasetError: no samples, or classes the models do not know.
    """
    from tqdm import tqdm

    from .pipeline import load_batch

    names = list(corruptions) if corruptions else corruption_names()
    index = {c: i for i, c in enumerate(labels)}
    if not samples:
        raise DatasetError("no images to evaluate the robustness on; give DATA with labelled images")
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DatasetError(f"classes not known to the model: {', '.join(unknown)}; the model knows {', '.join(labels)}")
    y = np.array([index[s.label] for s in samples])
    n = len(samples)
    variants: List[Tuple[str, int]] = [("clean", 0)] + [(c, s) for c in names for s in SEVERITIES]
    correct = {m.name: {v: 0 for v in variants} for m in contenders}
    specs: List[PreprocessSpec] = list(dict.fromkeys(m.spec for m in contenders))
    total = n * len(variants) * len(contenders)
    workers = os.cpu_count() or 1
    with tqdm(total=total, desc="robustness", unit="img", disable=None if progress else True, leave=False, file=sys.stderr) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgesight-corrupt") as pool:
        for start in range(0, n, chunk):
            paths = [s.path for s in samples[start : start + chunk]]
            truth = y[start : start + len(paths)]
            decoded = {spec: load_batch(paths, spec) for spec in specs}
            for name, severity in variants:
                for spec in specs:
                    images = decoded[spec] if severity == 0 else _corrupt_parallel(pool, workers, decoded[spec], name, severity, seed, start)
                    for m in contenders:
                        if m.spec == spec:
                            probs = m.predict(images, bar.update)
                            correct[m.name][(name, severity)] += int((probs.argmax(axis=1) == truth).sum())
    models = {m.name: _summary(m, {v: c / n for v, c in correct[m.name].items()}, names) for m in contenders}
    return {
        "num_samples": n,
        "seed": seed,
        "severities": list(SEVERITIES),
        "corruptions": {c: CORRUPTIONS[c].to_dict() for c in names},
        "models": models,
    }


def _summary(m: Contender, acc: Dict[Tuple[str, int], float], names: Sequence[str]) -> Dict[str, Any]:
    table = {c: [round(acc[(c, s)], 4) for s in SEVERITIES] for c in names}
    grid = np.array([[acc[(c, s)] for s in SEVERITIES] for c in names])
    return {
        "source": m.source,
        "clean_accuracy": round(acc[("clean", 0)], 4),
        "mean_corruption_accuracy": round(float(grid.mean()), 4),
        "accuracy": table,
        "mean_by_corruption": {c: round(float(grid[i].mean()), 4) for i, c in enumerate(names)},
        "mean_by_severity": [round(float(v), 4) for v in grid.mean(axis=0)],
        "worst_by_severity": [round(float(v), 4) for v in grid.min(axis=0)],
    }


def format_robustness(report: Dict[str, Any]) -> str:
    """A compact table: accuracy % per corruption and severity, the models side by side."""
    models = report["models"]
    keys = list(models)

    def cell(values: Sequence[float]) -> str:
        return "/".join(f"{v * 100:.1f}" for v in values)

    first = next(iter(models.values()))
    names = list(first["accuracy"])
    width = max(len("corruption"), *(len(c) for c in names))
    col = max(len(cell([1.0] * len(keys))), 5)
    head = f"{'corruption':<{width}}  " + " ".join(f"{s:>{col}}" for s in report["severities"]) + f" {'mean':>{col}}"
    lines = [
        f"robustness: {report['num_samples']} images" + (f" ({report['split']} split)" if report.get("split") else "")
        + f", {len(names)} corruptions x {len(report['severities'])} severities, seed {report['seed']}",
        f"accuracy % ({' / '.join(keys)})",
        head,
        f"{'clean':<{width}}  " + f"{cell([models[k]['clean_accuracy'] for k in keys]):>{col}}",
    ]
    for c in names:
        row = [cell([models[k]["accuracy"][c][i] for k in keys]) for i in range(len(report["severities"]))]
        lines.append(f"{c:<{width}}  " + " ".join(f"{r:>{col}}" for r in row) + f" {cell([models[k]['mean_by_corruption'][c] for k in keys]):>{col}}")
    for label, key in (("mean", "mean_by_severity"), ("worst", "worst_by_severity")):
        row = [cell([models[k][key][i] for k in keys]) for i in range(len(report["severities"]))]
        lines.append(f"{label:<{width}}  " + " ".join(f"{r:>{col}}" for r in row))
    lines.append("mean corruption accuracy: " + ", ".join(
        f"{k} {models[k]['mean_corruption_accuracy'] * 100:.1f}% (clean {models[k]['clean_accuracy'] * 100:.1f}%)" for k in keys))
    return "\n".join(lines)


def default_outputs(run_dir: Optional[Path]) -> Tuple[Path, Path]:
    """Where the report goes without ``--json``/``--plot``: the run folder, else the current folder."""
    folder = Path(run_dir) if run_dir is not None else Path(".")
    return folder / "robustness.json", folder / "robustness.png"


def save_robustness(report: Dict[str, Any], json_path: Path, plot_path: Optional[Path], title: str = "") -> List[Path]:
    """Write the report as JSON and its plot as PNG (both atomically); returns the paths written."""
    from .plots import plot_robustness

    written = [write_json(json_path, report)]
    if plot_path is not None:
        written.append(plot_robustness(report, plot_path, title=title))
    return written
