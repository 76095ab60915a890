"""Generated traffic-sign photos and the image-folder dataset made of them.

Each image is a drawn sign (``sign_drawing``) degraded the way a cheap camera on a moving car
degrades it (``scene``): perspective, scale, rotation, cluttered background, lighting and shadows,
blur, sensor noise and compression. The images bootstrap a sign classifier before real photos
exist.

``turn_left`` is the exact mirror image of ``turn_right``, so a model trained on these images
must be trained without horizontal flips (``edgesight train --no-hflip``).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError

from .scene import clutter, composite, crop_background, degrade, draw_pole, random_look, sign_quad
from .sign_drawing import MIN_SIZE, SIGN_CLASSES, check_kinds


def render_sign(kind: str, size: int, rng: np.random.Generator, background: Optional[np.ndarray] = None) -> np.ndarray:
    """One photo-like image of a traffic sign.

    The sign fills 45-90% of the frame, is rotated up to 15 degrees, seen in perspective,
    placed off-centre on a post in front of clutter, lit unevenly, and the picture is blurred,
    noisy and JPEG-compressed at random.

    Args:
        kind: One of ``SIGN_CLASSES``.
        size: Side of the square output image in pixels (16 or more).
        rng: Source of all randomness; the same generator state gives the same image.
        background: Optional BGR photo; a random crop of it replaces the generated clutter.

    Returns:
        A ``size`` x ``size`` x 3 BGR uint8 image.

    Raises:
        ConfigError: ``kind`` is not a known sign or ``size`` is too small.
    """
    check_kinds([kind])
    if size < MIN_SIZE:
        raise ConfigError(f"image size {size} is too small for a traffic sign; use at least {MIN_SIZE} pixels")
    # Compose at two or more times the output size, then area-resize: edges stay smooth.
    work = max(2 * size, 128)
    canvas = crop_background(background, work, rng) if background is not None else clutter(work, rng)
    side = rng.uniform(0.45, 0.9) * work
    slack = (work - side) / 2
    centre = work / 2 + rng.uniform(-slack, slack, 2)
    quad = sign_quad(centre, side, rng.uniform(-15, 15), rng.uniform(0.75, 1.0), rng.uniform(-0.08, 0.08), 0.03, rng)
    if rng.random() < 0.7:
        draw_pole(canvas, quad, work, rng)
    composite(canvas, kind, quad, random_look(rng))
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return degrade(img, rng)


def _class_rng(seed: int, kind: str) -> np.random.Generator:
    # Keyed by the class name, not its position, so a subset of classes renders the same images.
    return np.random.default_rng([seed, zlib.crc32(kind.encode())])


def write_signs(out: Path, per_class: int = 100, size: int = 64, seed: int = 0, classes: Sequence[str] = SIGN_CLASSES) -> Dict[str, int]:
    """Write ``per_class`` PNGs per sign class into ``out/<class>/<class>_NNNN.png``.

    Args:
        out: Dataset folder to create or add to.
        per_class: Images per class.
        size: Image side in pixels.
        seed: Seed of the generator; the same seed writes the same images.
        classes: Sign classes to write, a subset of ``SIGN_CLASSES``.

    Returns:
        Images written per class.

    Raises:
        ConfigError: An unknown class, a negative count or a too small size.
        OSError: An image cannot be written.
    """
    check_kinds(classes)
    if per_class < 0:
        raise ConfigError(f"per_class must be 0 or more, not {per_class}")
    if size < MIN_SIZE:
        raise ConfigError(f"image size {size} is too small for a traffic sign; use at least {MIN_SIZE} pixels")
    out = Path(out)
    counts: Dict[str, int] = {}
    for kind in classes:
        rng = _class_rng(seed, kind)
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{kind}_{i:04d}.png"
            if not cv2.imwrite(str(path), render_sign(kind, size, rng)):
                raise OSError(f"cannot write {path}")
        counts[kind] = per_class
    return counts
