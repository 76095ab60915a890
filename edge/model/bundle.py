"""Open a model bundle folder (``model.tflite`` + ``model.json`` + ``labels.txt``) or a bare
``.tflite`` file whose labels come from its embedded TFLite metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BundleError
from .spec import ModelInfo, PreprocessSpec, read_labels, read_model_info, resolve_labels


@dataclass(frozen=True)
class Bundle:
    """A model ready to load: where its .tflite is and what ``model.json`` says about it."""

    root: Path
    model_path: Path
    info: ModelInfo
    edgetpu: bool


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha(model_path: Path, info: ModelInfo, json_path: Path) -> None:
    expected = info.extra.get("sha256")
    if expected and sha256_file(model_path) != expected:
        raise BundleError(f"{model_path}: sha256 does not match {json_path} (the file was modified or damaged); copy the bundle again")


def load_bundle(path: Path, labels: Optional[Sequence[str]] = None, prefer_edgetpu: bool = False) -> Bundle:
    """Resolve a bundle folder or .tflite file, checking the model's sha256 against model.json.

    Args:
        path: a bundle folder or a ``.tflite`` file.
        labels: labels for a bare .tflite without metadata or model.json.
        prefer_edgetpu: use ``model_edgetpu.tflite`` when the bundle has one.

    Raises:
        BundleError: missing files, a sha256 mismatch, or a model without labels.
    """
    path = Path(path)
    if path.is_dir():
        info = read_model_info(path)
        model_path = path / str(info.extra.get("model_file", "model.tflite"))
        if not model_path.is_file():
            raise BundleError(f"{model_path}: not found; is {path} a model bundle written by 'edgesight convert'?")
        _check_sha(model_path, info, path / "model.json")
        compiled = path / "model_edgetpu.tflite"
        if prefer_edgetpu and compiled.is_file():
            return Bundle(path, compiled, info, True)
        return Bundle(path, model_path, info, False)
    if not path.is_file():
        raise BundleError(f"{path}: no such model file or bundle folder")
    if path.suffix.lower() != ".tflite":
        raise BundleError(f"{path}: not a .tflite file; give a bundle folder or a .tflite model")
    edgetpu = path.name.endswith("_edgetpu.tflite")
    sibling = path.parent / "model.json"
    if sibling.is_file() and labels is None:
        info = read_model_info(path.parent)
        if path.name == info.extra.get("model_file", "model.tflite"):
            _check_sha(path, info, sibling)
        return Bundle(path.parent, path, info, edgetpu)
    return Bundle(path.parent, path, _info_from_tflite(path, labels), edgetpu)


def _info_from_tflite(path: Path, labels: Optional[Sequence[str]]) -> ModelInfo:
    from .interpreter import TFLiteClassifier
    from .metadata import read_metadata

    data = path.read_bytes()
    meta = read_metadata(data, source=str(path))
    clf = TFLiteClassifier(data)
    names = tuple(labels) if labels is not None else (meta.labels if meta and meta.labels else None)
    if names is None:
        raise BundleError(f"{path}: the model has no embedded labels; give --labels labels.txt or use the bundle folder")
    names = resolve_labels(names, clf.num_classes, str(path))
    h, w = clf.input_size
    c = clf.input.shape[3]
    mean = meta.input_mean if meta else (0.0,)
    std = meta.input_std if meta else (1.0,)
    spec = PreprocessSpec(height=h, width=w, color="rgb" if c == 3 else "grayscale", input_mean=tuple(mean), input_std=tuple(std))
    return ModelInfo(labels=names, preprocess=spec, backbone="unknown", source={"model": str(path)})


def labels_arg(path: Optional[Path]) -> Optional[Sequence[str]]:
    """Read a ``--labels`` file if one was given."""
    return read_labels(path) if path else None
