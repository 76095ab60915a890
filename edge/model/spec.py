"""The model bundle contract: ``model.json`` and ``labels.txt``.

Training writes the preprocessing spec once; conversion copies it and adds quantisation details;
the runtime derives every preprocessing step from it. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .. import __version__
from ..errors import BundleError
from ..fsutil import write_json, write_text
from .baseline import Baseline

FORMAT = "edgesight.model/1"
COLORS = ("rgb", "grayscale")
RESIZE_MODES = ("stretch", "crop", "pad")
INTERPOLATIONS = ("area", "bilinear", "nearest", "bicubic")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes a model input.

    Attributes:
        height, width: model input size in pixels.
        color: ``rgb`` (3 channels, RGB order) or ``grayscale`` (1 channel).
        resize: ``stretch`` (ignore aspect ratio), ``crop`` (scale the shorter side, centre crop)
            or ``pad`` (scale the longer side, pad with black).
        interpolation: OpenCV interpolation used when resizing.
        input_mean, input_std: what the caller applies before feeding the model,
            ``(pixel - mean) / std`` per channel. edgesight models take raw 0-255 pixels
            (mean 0, std 1) and normalise inside the graph, so int8 inputs are plain pixels.
        model_mean, model_std: the normalisation the model applies internally, recorded so
            that third-party runtimes (TFLite metadata) can be told about it.
    """

    height: int
    width: int
    color: str = "rgb"
    resize: str = "stretch"
    interpolation: str = "bilinear"
    input_mean: Tuple[float, ...] = (0.0,)
    input_std: Tuple[float, ...] = (1.0,)
    model_mean: Tuple[float, ...] = (0.0,)
    model_std: Tuple[float, ...] = (255.0,)

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise BundleError(f"input size {self.height}x{self.width} is too small: use at least 8x8")
        for name, value, allowed in (
            ("color", self.color, COLORS),
            ("resize", self.resize, RESIZE_MODES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
        ):
            if value not in allowed:
                raise BundleError(f"unknown {name} '{value}': use one of {', '.join(allowed)}")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def size(self) -> Tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["channels"] = self.channels
        for k in ("input_mean", "input_std", "model_mean", "model_std"):
            d[k] = [float(v) for v in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for k in ("input_mean", "input_std", "model_mean", "model_std"):
            if k in kwargs:
                kwargs[k] = tuple(float(v) for v in kwargs[k])
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelInfo:
    """Everything a runtime needs to know about a model besides its weights (``model.json``)."""

    labels: Tuple[str, ...]
    preprocess: PreprocessSpec
    backbone: str = "unknown"
    output: str = "probabilities"
    toolkit_version: str = __version__
    source: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def baseline(self) -> Optional[Baseline]:
        """The drift baseline ``convert`` recorded (None for a model converted without one).

        Raises:
            BundleError: it does not have one share per label.
        """
        raw = self.extra.get("baseline")
        return None if raw is None else Baseline.from_dict(raw, self.num_classes)

    def with_extra(self, **kv: Any) -> "ModelInfo":
        return replace(self, extra={**self.extra, **kv})

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "format": FORMAT,
            "toolkit_version": self.toolkit_version,
            "backbone": self.backbone,
            "labels": list(self.labels),
            "num_classes": self.num_classes,
            "preprocess": self.preprocess.to_dict(),
            "output": self.output,
            "source": dict(self.source),
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "model.json") -> "ModelInfo":
        try:
            labels = tuple(str(x) for x in d["labels"])
            pre = PreprocessSpec.from_dict(d["preprocess"])
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: missing or invalid field ({e}); re-export the model with edgesight") from e
        if d.get("baseline") is not None:
            # Checked here, so a malformed one is refused when the bundle loads; its number of
            # classes once the labels are known to match the model (the ``baseline`` property).
            Baseline.from_dict(d["baseline"], None, where)
        core = {"format", "toolkit_version", "backbone", "labels", "num_classes", "preprocess", "output", "source"}
        return cls(
            labels=labels,
            preprocess=pre,
            backbone=str(d.get("backbone", "unknown")),
            output=str(d.get("output", "probabilities")),
            toolkit_version=str(d.get("toolkit_version", "unknown")),
            source=dict(d.get("source", {})),
            extra={k: v for k, v in d.items() if k not in core},
        )


def read_labels(path: Path) -> Tuple[str, ...]:
    """Read a labels file: one class name per line; blank lines are ignored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BundleError(f"{path}: cannot read labels ({e.strerror}); give a text file with one class per line") from e
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) < 2:
        raise BundleError(f"{path}: found {len(labels)} label(s); a classifier needs at least 2, one per line")
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise BundleError(f"{path}: duplicate labels {dup}; each class name must appear once")
    return labels


def write_labels(path: Path, labels: Sequence[str]) -> Path:
    return write_text(path, "".join(f"{x}\n" for x in labels))


def read_model_info(folder: Path) -> ModelInfo:
    """Read ``model.json`` from a run folder or bundle, checking it against ``labels.txt``."""
    folder = Path(folder)
    path = folder / "model.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BundleError(f"{path}: not found; is {folder} an edgesight run folder or model bundle?") from e
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not valid JSON ({e}); re-export the model with edgesight") from e
    info = ModelInfo.from_dict(d, where=str(path))
    labels_path = folder / "labels.txt"
    if labels_path.exists():
        file_labels = read_labels(labels_path)
        if file_labels != info.labels:
            raise BundleError(
                f"{labels_path}: {len(file_labels)} labels do not match the {info.num_classes} in {path}; "
                "restore the labels.txt written with the model"
            )
    return info


def write_model_info(folder: Path, info: ModelInfo) -> None:
    """Write ``model.json`` and ``labels.txt`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    write_json(folder / "model.json", info.to_dict())
    write_labels(folder / "labels.txt", info.labels)


def resolve_labels(labels: Optional[Sequence[str]], n_outputs: int, where: str) -> Tuple[str, ...]:
    """Check that ``labels`` match a model's output size, or name them ``class_0..``."""
    if labels is None:
        return tuple(f"class_{i}" for i in range(n_outputs))
    if len(labels) != n_outputs:
        raise BundleError(
            f"{where}: {len(labels)} labels but the model has {n_outputs} outputs; "
            "give the labels file the model was trained with"
        )
    return tuple(labels)
