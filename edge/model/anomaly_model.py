"""The interpreter of an anomaly bundle: pixels in, an anomaly score (and its heatmap) out.

It is a :class:`~.interpreter.TFLiteClassifier` whose "scores" are one number, the anomaly
score (1.0 = the bundle's threshold), so the camera loop, the Python API and ``classify`` treat
it like any model; :class:`~.anomaly.AnomalyDecider` turns the score into ``ok``/``defect``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import BundleError
from .anomaly import AnomalyDetector, check_output, is_anomaly, load_detector
from .interpreter import TFLiteClassifier
from .quant import dequantize


class AnomalyModel(TFLiteClassifier):
    """A feature (or reconstruction) model and its :class:`AnomalyDetector`.

    Attributes:
        detector: the scorer and threshold.
        last_map: the heatmap of the last :meth:`output_probabilities` (``h x w``, 1.0 = threshold).
    """

    def __init__(self, model: Union[str, Path, bytes], detector: AnomalyDetector, **kwargs: Any) -> None:
        kwargs.pop("outputs", None)
        super().__init__(model, **kwargs)
        self.detector = detector
        check_output(detector, self.output_tensor.shape, str(model) if not isinstance(model, bytes) else "<model bytes>")
        self.last_map: Optional[np.ndarray] = None
        self._last_pixels: Optional[np.ndarray] = None

    def clone(self, num_threads: Optional[int] = None) -> "AnomalyModel":
        return AnomalyModel(self._model, self.detector, num_threads=num_threads, output=self.output_kind,
                            input_mean=self.input_mean, input_std=self.input_std, backend=self.backend)

    @property
    def num_classes(self) -> int:
        return 1

    @property
    def enrolled(self) -> Any:
        return None

    @enrolled.setter
    def enrolled(self, value: Any) -> None:
        if value is not None and len(value):
            raise BundleError("an anomaly detector has no classes to enrol; enrol classes on a classifier bundle")

    def set_pixels(self, pixels: np.ndarray) -> None:
        if self.detector.aligner is not None:
            pixels = self.detector.aligner(pixels)
        self._last_pixels = pixels
        super().set_pixels(pixels)

    def features(self) -> np.ndarray:
        """The model's current output, dequantised (``h x w x D`` features or the reconstruction)."""
        out = self._interp.get_tensor(self.output_tensor.index)[0]
        t = self.output_tensor
        return dequantize(out, t.scale, t.zero_point) if t.quantized else out.astype(np.float32)

    def output_probabilities(self) -> np.ndarray:
        """``[score]``: the current frame's anomaly score (1.0 = the threshold); its heatmap
        goes to :attr:`last_map`."""
        score, heat = self.detector.score(self.features(), self._last_pixels)
        self.last_map = heat
        return np.array([score], np.float32)


def open_model(bundle: Any, **kwargs: Any) -> TFLiteClassifier:
    """The interpreter for a loaded bundle: an :class:`AnomalyModel` for an anomaly bundle,
    else a plain :class:`TFLiteClassifier` (``kwargs`` go to it)."""
    if is_anomaly(bundle.info):
        verify = kwargs.pop("verify", True)
        detector = load_detector(bundle.root, bundle.info, verify, bundle.json_path)
        return AnomalyModel(bundle.model_path, detector, **kwargs)
    kwargs.pop("verify", None)
    return TFLiteClassifier(bundle.model_path, **kwargs)
