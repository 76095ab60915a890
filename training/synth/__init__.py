"""Generated image datasets, for demos, tests and bootstrapping a project without photos.

``shapes``: simple shapes, one folder per class. ``signs``: photo-like traffic signs (drawn in
``sign_drawing``, put into pictures by ``scene``). ``drive``: a dashcam video past the same signs,
with its ground-truth timeline. ``qcparts``: good and defective parts on an inspection line, for
anomaly detection.
"""

from .drive import drive_roi, make_drive_video
from .qc_dataset import write_qc_parts
from .qcparts import DEFECT_KINDS, PART_KINDS, render_part
from .shapes import SHAPES, render_shape, write_shapes
from .sign_drawing import SIGN_CLASSES, canonical_sign
from .signs import render_sign, write_signs

__all__ = [
    "DEFECT_KINDS",
    "PART_KINDS",
    "SHAPES",
    "SIGN_CLASSES",
    "canonical_sign",
    "drive_roi",
    "make_drive_video",
    "render_part",
    "render_shape",
    "render_sign",
    "write_qc_parts",
    "write_shapes",
    "write_signs",
]
