"""``ConvertConfig``: the options of ``edgesight convert``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

from edgesight.edge.errors import ConfigError

QUANT_MODES = ("int8", "float16", "dynamic", "float32")
IO_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class ConvertConfig:
    """How a Keras model becomes a .tflite file.

    Attributes:
        quant: ``int8`` (full integer), ``float16``, ``dynamic`` (int8 weights, float
            activations) or ``float32``.
        io: input/output type of an int8 model: ``uint8`` (camera pixels; what MediaPipe and the
            Edge TPU take) or ``int8``.
        num_calib: calibration images drawn (stratified) from the training split.
        max_drop: largest tolerated top-1 accuracy drop, in percentage points.
        edgetpu: constrain the model to what the Edge TPU compiler maps, and compile it when
            ``edgetpu_compiler`` is installed.
        per_tensor: per-tensor instead of per-channel weight quantisation (a fallback that some
            accelerators need, and that occasionally calibrates better).
        seed: seed of the calibration sample.
    """

    quant: str = "int8"
    io: str = "uint8"
    num_calib: int = 300
    max_drop: float = 1.0
    edgetpu: bool = False
    per_tensor: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quant not in QUANT_MODES:
            raise ConfigError(f"unknown quantisation '{self.quant}'; use one of {', '.join(QUANT_MODES)}")
        if self.io not in IO_TYPES:
            raise ConfigError(f"unknown --io '{self.io}'; use uint8 or int8")
        if self.num_calib < 1:
            raise ConfigError(f"--num-calib must be at least 1, got {self.num_calib}")
        if self.max_drop < 0:
            raise ConfigError(f"--max-drop cannot be negative, got {self.max_drop}")
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
