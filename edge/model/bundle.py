"""Open a model bundle folder (``model.tflite`` + ``model.json`` + ``labels.txt``) or a bare
``.tflite`` file whose labels come from its embedded TFLite metadata."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional, Sequence, Tuple

from ..errors import BundleError
from .baseline import Baseline
from .spec import ModelInfo, PreprocessSpec, read_labels, read_model_info, resolve_labels


@dataclass(frozen=True)
class Bundle:
    """A model ready to load: where its .tflite is and what ``model.json`` says about it.

    ``json_path`` is the model.json ``info`` was read from; None when ``info`` was derived from
    the .tflite itself (a bare model with embedded or given labels).
    """

    root: Path
    model_path: Path
    info: ModelInfo
    edgetpu: bool
    json_path: Optional[Path] = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


EDGETPU_FILE = "model_edgetpu.tflite"
# model.json keys: the sha256 of model_file, and of the Edge TPU compilation when convert made one.
SHA_KEY, EDGETPU_SHA_KEY = "sha256", "edgetpu_sha256"


def model_file_name(info: ModelInfo, json_path: Path) -> str:
    """``model_file`` of model.json: a path inside the bundle, or a BundleError naming the key."""
    name = info.extra.get("model_file", "model.tflite")
    parts = PurePosixPath(str(name)).parts if isinstance(name, str) else ()
    if not parts or str(name).startswith("/") or ".." in parts:
        raise BundleError(f"{json_path}: model_file: {name!r} is not a file inside the bundle; "
                          "name the .tflite beside model.json (model.tflite), or convert the model again")
    return str(name)


def expected_sha(model_path: Path, info: ModelInfo, json_path: Path,
                 hint: str = ", or pass --no-verify to run it unverified") -> str:
    """The sha256 model.json records for ``model_path`` (the model or its Edge TPU compilation).

    ``hint`` ends the error: the way around it where there is one.

    Raises:
        BundleError: model.json records none; the message names the file, the key and the fix.
    """
    edgetpu = model_path.name == EDGETPU_FILE
    key = EDGETPU_SHA_KEY if edgetpu else SHA_KEY
    value = info.extra.get(key)
    if not isinstance(value, str) or not value:
        how = "compile it with 'edgesight convert --edgetpu'" if edgetpu else "convert the model again with 'edgesight convert'"
        raise BundleError(f"{json_path}: {key}: missing, so {model_path.name} cannot be verified; {how}{hint}")
    return value


def _check_sha(model_path: Path, info: ModelInfo, json_path: Path) -> None:
    if sha256_file(model_path) != expected_sha(model_path, info, json_path):
        raise BundleError(f"{model_path}: sha256 does not match {json_path} (the file was modified or damaged); copy the bundle again")


def load_bundle(path: Path, labels: Optional[Sequence[str]] = None, prefer_edgetpu: bool = False,
                verify: bool = True) -> Bundle:
    """Resolve a bundle folder or .tflite file, checking the model's sha256 against model.json.

    The model a bundle runs must match the sha256 model.json records for it: ``sha256`` for
    ``model_file``, ``edgetpu_sha256`` for ``model_edgetpu.tflite`` (recorded by
    ``edgesight convert --edgetpu``). A bare ``.tflite`` without a model.json beside it has no
    recorded hash and is loaded as it is.

    Args:
        path: a bundle folder or a ``.tflite`` file.
        labels: labels for a bare .tflite without metadata or model.json.
        prefer_edgetpu: use ``model_edgetpu.tflite`` when the bundle has one.
        verify: False skips the sha256 checks (``--no-verify``): the caller says so.

    Raises:
        BundleError: missing files, a ``model_file`` outside the bundle, a sha256 that is
            missing or does not match, or a model without labels.
    """
    path = Path(path)
    if path.is_dir():
        info = read_model_info(path)
        model_path = path / model_file_name(info, path / "model.json")
        if not model_path.is_file():
            raise BundleError(f"{model_path}: not found; is {path} a model bundle written by 'edgesight convert'?")
        compiled = path / EDGETPU_FILE
        chosen = compiled if prefer_edgetpu and compiled.is_file() else model_path
        if verify:
            _check_sha(chosen, info, path / "model.json")
        return Bundle(path, chosen, info, chosen == compiled, path / "model.json")
    if not path.is_file():
        raise BundleError(f"{path}: no such model file or bundle folder")
    if path.suffix.lower() != ".tflite":
        raise BundleError(f"{path}: not a .tflite file; give a bundle folder or a .tflite model")
    edgetpu = path.name.endswith("_edgetpu.tflite")
    sibling = path.parent / "model.json"
    if sibling.is_file() and labels is None:
        info = read_model_info(path.parent)
        name = model_file_name(info, sibling)
        if path not in (path.parent / name, path.parent / EDGETPU_FILE):
            raise BundleError(f"{path}: {sibling} describes {name}, not this file; "
                              "give the bundle folder, or --labels to run this model on its own")
        if verify:
            _check_sha(path, info, sibling)
        return Bundle(path.parent, path, info, edgetpu, sibling)
    return Bundle(path.parent, path, _info_from_tflite(path, labels), edgetpu)


def check_model_json(bundle: Bundle, model: Any) -> None:
    """Check that what model.json says matches the loaded model's tensors.

    Compares the input size and channels, the input and output dtype and quantisation (scale,
    zero point; when model.json records them) and the number of labels (and of the drift
    baseline's label shares) with the output's class count, so a model.json from another model is refused before the first frame rather than
    failing inside preprocessing.

    Args:
        bundle: the loaded bundle (nothing is checked when it has no model.json).
        model: the :class:`~.interpreter.TFLiteClassifier` made from ``bundle.model_path``.

    Raises:
        BundleError: one line naming model.json, the field, both values and the fix.
    """
    if bundle.json_path is None:
        return
    fix = "model.json does not describe this model: copy the whole bundle again or re-run 'edgesight convert'"
    for field, declared, what, actual, same in _model_json_checks(bundle.info, model):
        if not same:
            raise BundleError(f"{bundle.json_path}: {field} is {declared} but the {what} of {bundle.model_path.name} "
                              f"is {actual}; {fix}")
    if getattr(model, "detector", None) is not None:
        return  # an anomaly detector: its output fits its scorer (checked when it loads), labels are ok/defect
    if len(bundle.info.labels) != model.num_classes:
        raise BundleError(f"{bundle.json_path}: labels has {len(bundle.info.labels)} names but the output of "
                          f"{bundle.model_path.name} has {model.num_classes} classes; {fix}")
    if bundle.info.extra.get("baseline") is not None:  # the drift baseline: one share per label
        Baseline.from_dict(bundle.info.extra["baseline"], model.num_classes, str(bundle.json_path))


def _model_json_checks(info: ModelInfo, model: Any) -> Iterator[Tuple[str, Any, str, Any, bool]]:
    """``(model.json field, its value, what of the model, its value, whether they agree)``."""
    spec, shape = info.preprocess, model.input.shape
    yield "preprocess.height", spec.height, "input height", shape[1], spec.height == shape[1]
    yield "preprocess.width", spec.width, "input width", shape[2], spec.width == shape[2]
    # `color` decides the channel count (model.json's `channels` only restates it)
    yield ("preprocess.color", f"{spec.color} ({spec.channels} channel{'s' if spec.channels > 1 else ''})",
           "input channel count", shape[3], spec.channels == shape[3])
    quant = info.extra.get("quantization")
    for side, tensor in (("input", model.input), ("output", model.output_tensor)):
        recorded = quant.get(side) if isinstance(quant, dict) else None
        if not isinstance(recorded, dict):
            continue  # written before conversion recorded the tensors: nothing to compare
        for key, what, actual in (("dtype", "dtype", tensor.dtype.name), ("scale", "scale", tensor.scale),
                                  ("zero_point", "zero point", tensor.zero_point)):
            if key in recorded:
                yield f"quantization.{side}.{key}", recorded[key], f"{side} {what}", actual, _same(recorded[key], actual)


def _same(declared: Any, actual: Any) -> bool:
    if isinstance(actual, str):
        return declared == actual
    if isinstance(declared, bool) or not isinstance(declared, (int, float)):
        return False
    if isinstance(actual, float):  # a scale: JSON keeps it exactly, a hand-edited file may round it
        return math.isclose(declared, actual, rel_tol=1e-6, abs_tol=1e-12)
    return declared == actual


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
