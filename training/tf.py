"""The one way training and conversion import TensorFlow and Keras.

Importing TensorFlow prints absl, oneDNN and CPU-feature banners from C++ (TensorFlow 2.16+
prints them whatever ``TF_CPP_MIN_LOG_LEVEL`` says); the import runs inside
:func:`edgesight.edge.native_log.native_output`, so they reach the ``edgesight`` logger at DEBUG
(``edgesight -v``) instead of the terminal.
"""

from __future__ import annotations

import logging
import os
import sys

from edgesight.edge.errors import missing_extra
from edgesight.edge.native_log import native_output


def import_tensorflow():
    """Import and return ``tensorflow`` with its import banners captured.

    Unless the user set ``TF_CPP_MIN_LOG_LEVEL`` or asked for debug logs, TensorFlow's own C++
    logging is limited to errors.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
    """
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        return tf
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not logging.getLogger("edgesight").isEnabledFor(logging.DEBUG):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        with native_output("importing TensorFlow"):
            import tensorflow as tf
    except ImportError as e:
        if e.name != "tensorflow":
            raise
        raise missing_extra("tensorflow", "train", "training and conversion") from e
    return tf


def import_keras():
    """Import and return ``keras`` (TensorFlow backend), TensorFlow first, through :func:`import_tensorflow`."""
    import_tensorflow()
    import keras

    return keras
