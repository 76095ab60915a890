"""edgesight: from a folder of labelled images to a live int8 classifier on a small device."""

from .edge import __version__
from .edge.errors import BundleError, ConfigError, DatasetError, EdgesightError

__all__ = ["__version__", "EdgesightError", "DatasetError", "BundleError", "ConfigError"]
