"""edgesight: from a folder of labelled images to a live int8 classifier on a small device.

::

    import edgesight as es
    run = es.train("data/signs", out="runs/signs", model="cnn_small", epochs=20)   # needs [train]
    report = es.convert(run, out="models/signs-int8", quant="int8")                 # verified bundle
    clf = es.Classifier("models/signs-int8")          # LiteRT only, no TensorFlow imported
    r = clf("photo.jpg")                              # or a BGR numpy frame
    for r in clf.stream("0", threshold=0.6, smooth=5, max_frames=100):
        ...

Importing this package loads nothing heavy: each name below is imported on first use, and
TensorFlow only when ``train`` or ``convert`` runs.
"""

from importlib import import_module
from typing import Any

from .edge import __version__
from .edge.errors import BundleError, ConfigError, DatasetError, EdgesightError, SourceError

# public name -> module that defines it
_LAZY = {
    "Classifier": "edgesight.edge.classifier",
    "Prediction": "edgesight.edge.classifier",
    "Result": "edgesight.edge.frames",
    "RunConfig": "edgesight.edge.loop.config",
    "TrainConfig": "edgesight.training.config",
    "ConvertConfig": "edgesight.convert.config",
    "train": "edgesight.training.api",
    "TrainedRun": "edgesight.training.api",
    "Metrics": "edgesight.training.api",
    "ClassMetrics": "edgesight.training.api",
    "ConversionReport": "edgesight.convert.api",
}

__all__ = ["__version__", "EdgesightError", "DatasetError", "BundleError", "ConfigError", "SourceError", "convert", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "convert":
        # The package edgesight.convert is callable: es.convert(run, out=...) converts.
        return import_module("edgesight.convert")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesight' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
