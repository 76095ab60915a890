"""``ConvertConfig``: the options of ``edgesight convert``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from edgesight.edge import options
from edgesight.edge.errors import ConfigError

opt = options.option

QUANT_MODES = ("int8", "float16", "dynamic", "float32")
IO_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class ConvertConfig:
    """How a Keras model becomes a verified .tflite bundle: the options of ``edgesight
    convert``, its ``--config`` file and ``edgesight.convert``. Field names are the YAML keys;
    the flags are the same with ``-``.

    ``labels``, ``calib`` and ``eval_data`` matter for a bare ``.keras`` file (a run folder
    knows its labels and its train/val/test split). Without labelled images to verify on, part
    of a plain ``calib`` folder is held out and the converted model is compared with the Keras
    model there: the share of changed labels bounds the accuracy drop. ``calibrate`` fits the temperature on the
    run's validation split, or on the held-out part of a labelled ``calib`` dataset.
    """

    quant: str = opt("int8", "int8 (full integer), float16, dynamic (int8 weights, float activations) or float32.", choices=QUANT_MODES)
    io: str = opt("uint8", "Input/output type of an int8 model: uint8 (camera pixels; MediaPipe and the Edge TPU need it) or int8.", choices=IO_TYPES)
    num_calib: int = opt(300, "Calibration images: a stratified sample of the training split, decoded and resized by the same code as in training.", min=1)
    max_drop: float = opt(1.0, "Largest tolerated top-1 accuracy drop in percentage points; beyond it the command exits 1, keeps the bundle and says what to try.", min=0.0)
    edgetpu: bool = opt(False, "Edge TPU: full int8, uint8 I/O, batch 1, op compatibility report; compiles when edgetpu_compiler is installed.")
    per_tensor: bool = opt(False, "Per-tensor instead of per-channel weight quantisation.")
    qat_epochs: int = opt(3, "Quantisation-aware fine-tuning before int8 conversion (EfficientNet-Lite0 models): epochs over up to 2,000 "
                          "training images, the model learning to keep its answers with int8 weights and activations; 0 turns it off. "
                          "The report compares the int8 model with the model as trained.", min=0)
    calibrate: bool = opt(True, "Fit a temperature on the validation split and bake it into the model, so its scores are probabilities.", negatable=True)
    embedding: bool = opt(True, "Add a second output, the pooled features before the classifier head, computed in the same invoke "
                          "(for 'edgesight embed' and 'edgesight enroll'; MediaPipe still reads the scores and labels).", negatable=True)
    labels: Optional[str] = opt(None, "labels.txt for a bare .keras file.", exists="file")
    calib: Optional[str] = opt(None, "Calibration images for a bare .keras file: a labelled dataset (20 % held out to verify on) or any folder of images (without --eval, 20 % held out to compare the converted model with the Keras model).", exists="any")
    eval_data: Optional[str] = opt(None, "Labelled images to verify on (default: the run's test split, or the part of --calib held out); the --config key is eval_data.", flag="eval", exists="any")
    seed: int = opt(0, "Seed of the calibration sample.")
    trust_model: bool = opt(False, "Allow Lambda/custom layers, which run code from the model file.")

    def __post_init__(self) -> None:
        options.validate(self)
        if self.edgetpu and self.quant != "int8":
            raise ConfigError("--edgetpu needs --quant int8: the Edge TPU runs only full-integer models")
        if self.edgetpu and self.io != "uint8":
            raise ConfigError("--edgetpu needs --io uint8: edgesight's Edge TPU models take uint8 camera pixels")

    @property
    def needs_calibration(self) -> bool:
        return self.quant == "int8"

    @classmethod
    def int8(cls, io: str = "uint8", **kw: Any) -> "ConvertConfig":
        return cls(quant="int8", io=io, **kw)

    @classmethod
    def float16(cls, **kw: Any) -> "ConvertConfig":
        return cls(quant="float16", **kw)

    @classmethod
    def dynamic(cls, **kw: Any) -> "ConvertConfig":
        return cls(quant="dynamic", **kw)

    @classmethod
    def float32(cls, **kw: Any) -> "ConvertConfig":
        return cls(quant="float32", **kw)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
