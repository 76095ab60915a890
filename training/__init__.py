"""Datasets, augmentation, backbones, training, evaluation and plots.

Importing this package does not import TensorFlow; the modules that need it import it inside
the functions that use it, or at their own import (``training.train``, ``training.backbones``).
"""
