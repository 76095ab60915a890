"""Evaluate a Keras model (run folder or ``.keras`` file) on labelled images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import BundleError, DatasetError
from .metrics import classification_report
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, read_labels, read_model_info, resolve_labels
from .data import Sample, Split, make_split, scan_dataset


def load_keras_model(path: Path, trust: bool = False):
    """Load a ``.keras`` file in Keras safe mode unless ``trust`` is set.

    Raises:
        BundleError: the file is missing, not a Keras model, or needs ``--trust-model``.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: model file not found; give a run folder or a .keras file")
    import zipfile

    # Keras reports any file that is not a zip archive as "File not found", which misleads for a
    # file that exists; a .keras model is always a zip archive (.h5 is the legacy HDF5 format).
    if path.suffix.lower() not in (".h5", ".hdf5") and not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a Keras model (a .keras file is a zip archive, this is not one); "
                          "give a .keras file saved by Keras 3")
    from .tf import import_keras

    keras = import_keras()

    # Registers the custom layers our own models may use before deserialising.
    from . import backbones  # noqa: F401

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not trust)
    except ValueError as e:
        msg = str(e)
        if "safe_mode" in msg or "Lambda" in msg or "arbitrary code" in msg:
            raise BundleError(
                f"{path}: the model contains a Lambda or custom layer whose code would run on load; "
                "pass --trust-model only if you trust where the file came from"
            ) from e
        raise BundleError(f"{path}: not a loadable Keras model ({msg.splitlines()[0] if msg else type(e).__name__}); give a .keras file saved by Keras 3") from e
    except (OSError, KeyError, TypeError) as e:
        raise BundleError(f"{path}: not a Keras model file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); give a .keras file saved by Keras 3") from e
    except Exception as e:  # zipfile.BadZipFile and friends from a corrupt archive
        raise BundleError(f"{path}: not a Keras model file ({type(e).__name__}); give a .keras file saved by Keras 3") from e


def spec_from_model(model, where: str) -> PreprocessSpec:
    """A default preprocessing spec for a bare model: stretch resize, raw pixels in."""
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) != 4 or shape[3] not in (1, 3) or shape[1] is None or shape[2] is None:
        raise BundleError(f"{where}: model input shape {shape} is not an image (expected batch x height x width x 1 or 3)")
    return PreprocessSpec(height=int(shape[1]), width=int(shape[2]), color="rgb" if shape[3] == 3 else "grayscale")


def load_model_source(source: Path, labels: Optional[Path] = None, trust: bool = False) -> Tuple[Any, ModelInfo, Optional[Path]]:
    """Open a run folder or a ``.keras`` file.

    Returns:
        ``(keras_model, info, run_dir)``; ``run_dir`` is None for a bare model file.
    """
    source = Path(source)
    if source.is_dir():
        info = read_model_info(source)
        model = load_keras_model(source / "model.keras", trust)
        run_dir: Optional[Path] = source
    else:
        model = load_keras_model(source, trust)
        sibling = source.parent / "model.json"
        if labels is None and sibling.exists():
            info = read_model_info(source.parent)
        else:
            names = read_labels(labels) if labels else None
            n_out = int(model.outputs[0].shape[-1])
            info = ModelInfo(labels=resolve_labels(names, n_out, str(labels or source)), preprocess=spec_from_model(model, str(source)))
        run_dir = None
    n_out = int(model.outputs[0].shape[-1])
    if n_out != info.num_classes:
        raise BundleError(f"{source}: the model has {n_out} outputs but {info.num_classes} labels; give the labels the model was trained with")
    return model, info, run_dir


def predict_probs(model, paths: Sequence[str], spec: PreprocessSpec, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for image files, through the training input pipeline."""
    from .pipeline import inference_batch, make_dataset

    if not paths:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    batch_size = inference_batch(spec.height, spec.width, batch_size)
    ds = make_dataset(paths, [0] * len(paths), spec, 1, batch_size, training=False, cache="none", one_hot=False)
    ds = ds.map(lambda x, y: x)
    return np.asarray(model.predict(ds, verbose=0))


def tflite_probs(model_path: Path, paths: Sequence[str], info: ModelInfo, chunk: int = 256) -> np.ndarray:
    """Class probabilities from a .tflite model, through the device runtime's interpreter."""
    from edgesight.edge.model.interpreter import TFLiteClassifier
    from .pipeline import load_batch

    spec = info.preprocess
    clf = TFLiteClassifier(model_path, num_threads=os.cpu_count(), output=info.output, input_mean=spec.input_mean[0], input_std=spec.input_std[0])
    out = np.zeros((len(paths), clf.num_classes), np.float32)
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        out[start : start + len(part)] = clf.predict_batch(load_batch(part, spec))
    return out


def is_tflite_source(source: Path) -> bool:
    """A .tflite file, or a bundle folder (model.tflite without model.keras)."""
    source = Path(source)
    if source.is_dir():
        return (source / "model.tflite").exists() and not (source / "model.keras").exists()
    return source.suffix.lower() == ".tflite"


def report_for(model, info: ModelInfo, samples: Sequence[Sample], batch_size: int = 64) -> Dict[str, Any]:
    """Predict ``samples`` and compute the classification report against their labels.

    ``model`` is a Keras model or the path of a .tflite file.
    """
    index = {c: i for i, c in enumerate(info.labels)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DatasetError(f"classes not known to the model: {', '.join(unknown)}; the model knows {', '.join(info.labels)}")
    paths = [s.path for s in samples]
    if isinstance(model, (str, Path)):
        probs = tflite_probs(Path(model), paths, info)
    else:
        probs = predict_probs(model, paths, info.preprocess, batch_size)
    y_true = [index[s.label] for s in samples]
    y_pred = probs.argmax(axis=1).tolist()
    return classification_report(y_true, y_pred, info.labels)


def samples_to_evaluate(data: Path, split: str = "auto", seed: int = 42) -> Tuple[List[Sample], str, List[Tuple[str, str]]]:
    """The samples of ``data`` to evaluate on.

    ``auto`` takes the ``test/`` split of a pre-split folder and every image otherwise;
    ``train``/``val``/``test``/``all`` select explicitly. A run folder's own ``split.json``
    may also be given as ``data``.

    Returns:
        ``(samples, split_used, skipped)``.
    """
    data = Path(data)
    if data.is_dir() and (data / "split.json").exists():
        sp = Split.load(data / "split.json")
        name = "test" if split == "auto" else split
        samples = sp.samples(name)
        if not samples:
            raise DatasetError(f"{data}/split.json: the {name} split is empty; pass a DATA folder or --split val")
        return samples, name, []
    scanned = scan_dataset(data)
    if split == "auto":
        split = "test" if "test" in scanned.given else "all"
    if split == "all":
        samples = [s for v in scanned.given.values() for s in v]
    else:
        if "all" in scanned.given:
            sp = make_split(scanned, 0.1, 0.1, seed)
            samples = sp.samples(split)
        else:
            samples = list(scanned.given.get(split, []))
    if not samples:
        raise DatasetError(f"{data}: no images in the {split} split; choose --split all")
    return samples, split, list(scanned.skipped)
