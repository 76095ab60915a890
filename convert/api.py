"""The Python API of conversion: ``edgesight.convert`` and its typed report.

``edgesight convert`` calls the same :func:`~edgesight.convert.convert.convert_source` with the
same :class:`~edgesight.convert.config.ConvertConfig`; this adds keyword arguments and a typed
report. TensorFlow is imported only when ``convert`` runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

from edgesight.edge import options as _options
from edgesight.edge.errors import BundleError

if TYPE_CHECKING:  # pragma: no cover
    from edgesight.edge.classifier import Classifier

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert`` made and measured (``conversion_report.json`` of the bundle).

    Attributes:
        bundle: the bundle folder.
        passed: the top-1 drop is within ``max_drop``.
        mode: ``int8``, ``float16``, ``dynamic`` or ``float32``; ``io`` the input/output type.
        float_accuracy, quant_accuracy: top-1 of the Keras model and of the converted one on
            the same ``num_samples`` images; ``accuracy_drop_pp`` the difference in points. All
            three are None when the verification images had no labels (a plain ``calib``
            folder, part of which was held out): then ``labelled`` is False and ``passed``
            compares ``changed_pp``, which bounds the drop, with ``max_drop``.
        agreement: share of images both models give the same label; ``changed_pp`` the rest,
            in points.
        mean_abs_prob_diff: mean absolute difference of their probabilities.
        size_bytes, float_size_bytes, size_ratio: the .tflite against its float32 version.
        per_class_change_pp: accuracy change per class, in points.
        temperature: the calibration temperature baked into the model (1.0: not calibrated).
        ece: expected calibration error (15 bins) on the verification images:
            ``{"before": {"float": ...}, "after": {"float": ..., "quant": ...}}``.
        warnings: what the verification found suspicious.
        raw: the whole report as written.
    """

    bundle: Path
    passed: bool
    mode: str
    io: str
    float_accuracy: Optional[float]
    quant_accuracy: Optional[float]
    accuracy_drop_pp: Optional[float]
    agreement: float
    mean_abs_prob_diff: float
    size_bytes: int
    float_size_bytes: int
    size_ratio: float
    num_samples: int
    per_class_change_pp: Dict[str, float]
    temperature: float = 1.0
    labelled: bool = True
    changed_pp: float = 0.0
    ece: Dict[str, Any] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, bundle: Path, d: Mapping[str, Any]) -> "ConversionReport":
        if d.get("task") == "anomaly":
            # An anomaly detector: the accuracies are image AUROCs, agreement the ok/defect decisions.
            return cls(
                bundle=Path(bundle), passed=bool(d["passed"]), mode=d["mode"], io=d["io"],
                float_accuracy=_number(d["float_auroc"]), quant_accuracy=_number(d["quant_auroc"]),
                accuracy_drop_pp=_number(d["auroc_drop_pp"]), agreement=float(d["decision_agreement"]), mean_abs_prob_diff=0.0,
                size_bytes=int(d["size_bytes"]), float_size_bytes=int(d["float_size_bytes"]), size_ratio=float(d["size_ratio"]),
                num_samples=int(d["holdout_images"]) + int(d["defect_images"]), per_class_change_pp={},
                labelled=d["defect_images"] > 0, raw=dict(d))
        return cls(
            bundle=Path(bundle), passed=bool(d["passed"]), mode=d["mode"], io=d["io"],
            float_accuracy=_number(d["float_accuracy"]), quant_accuracy=_number(d["quant_accuracy"]),
            accuracy_drop_pp=_number(d["accuracy_drop_pp"]), agreement=float(d["agreement"]),
            mean_abs_prob_diff=float(d["mean_abs_prob_diff"]), size_bytes=int(d["size_bytes"]),
            float_size_bytes=int(d["float_size_bytes"]), size_ratio=float(d["size_ratio"]),
            num_samples=int(d["num_samples"]),
            per_class_change_pp={k: float(v["change_pp"]) for k, v in d["per_class"].items() if "change_pp" in v},
            temperature=float(d.get("calibration", {}).get("temperature", 1.0)), labelled=bool(d.get("labelled", True)),
            changed_pp=float(d.get("changed_pp", round((1 - float(d["agreement"])) * 100, 4))), ece=dict(d.get("ece") or {}),
            warnings=tuple(d.get("warnings", ())), raw=dict(d),
        )

    @classmethod
    def load(cls, bundle: PathLike) -> "ConversionReport":
        """The report of an existing bundle folder."""
        path = Path(bundle) / "conversion_report.json"
        try:
            return cls.from_dict(Path(bundle), json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError) as e:
            raise BundleError(f"{path}: no readable conversion report ({e})") from e

    def classifier(self, **kwargs: Any) -> "Classifier":
        """The bundle loaded for inference (keyword arguments go to :class:`Classifier`)."""
        from edgesight.edge.classifier import Classifier

        return Classifier(self.bundle, **kwargs)

    def __fspath__(self) -> str:
        return str(self.bundle)

    def __truediv__(self, name: str) -> Path:
        """A file of the bundle: ``report / "model.tflite"``."""
        return self.bundle / name


def _number(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def convert(source: PathLike, out: PathLike, *, config: Optional[PathLike] = None, progress: bool = True,
            **opts: Any) -> ConversionReport:
    """Convert a run folder (or a ``.keras`` file with ``labels`` and ``calib``) to a verified
    TFLite bundle (needs the ``train`` extra).

    Args:
        source: a run folder or a :class:`TrainedRun`, or a ``.keras`` file.
        out: the bundle folder to write.
        config: a YAML file of options, as ``edgesight convert --config``; keywords win over it.
        progress: show progress bars.
        **opts: any ``edgesight convert`` option by field name (``quant``, ``io``,
            ``num_calib``, ``max_drop``, ``edgetpu``, ``calibrate``, ``labels``, ``calib``, ``eval_data``...;
            see :class:`~edgesight.convert.config.ConvertConfig`).

    Returns:
        The verification report. A conversion whose accuracy drop exceeds ``max_drop`` still
        writes the bundle and returns ``passed=False``.
    """
    from .config import ConvertConfig
    from .anomaly import convert_any

    values = _options.load_file(ConvertConfig, config) if config else {}
    values.update(_options.from_mapping(ConvertConfig, {k: os.fspath(v) if isinstance(v, os.PathLike) else v
                                                          for k, v in opts.items()}, "convert()"))
    cfg = _options.make(ConvertConfig, values, str(config) if config else "")
    res = convert_any(Path(os.fspath(source)), Path(os.fspath(out)), cfg, progress=progress)
    return ConversionReport.from_dict(res.bundle, res.report)
