"""edgesight device runtime.

This package is what a Raspberry Pi or Coral board installs: NumPy, OpenCV and a LiteRT
interpreter only. It never imports TensorFlow (a test enforces this), and importing it has no
side effects: no device probing, no environment changes.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402  (re-exported public API)
    BundleError,
    ConfigError,
    DatasetError,
    EdgesightError,
)

__all__ = ["__version__", "EdgesightError", "DatasetError", "BundleError", "ConfigError"]
