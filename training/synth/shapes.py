"""Generated images of simple shapes on noisy backgrounds, one folder per shape class."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import cv2
import numpy as np

SHAPES = ("circle", "cross", "ring", "square", "star", "triangle")


def _poly(n: int, r: float, cx: float, cy: float, angle: float, inner: float = 0.0) -> np.ndarray:
    """Vertices of a regular polygon, or of a star when ``inner`` > 0."""
    pts = []
    k = 2 * n if inner else n
    for i in range(k):
        rad = inner * r if inner and i % 2 else r
        a = angle + 2 * np.pi * i / k
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return np.round(np.array(pts)).astype(np.int32)


def _draw_shape(img: np.ndarray, kind: str, rng: np.random.Generator, color) -> None:
    h, w = img.shape[:2]
    s = min(h, w)
    r = rng.uniform(0.22, 0.36) * s
    cx = rng.uniform(r + 1, w - r - 1)
    cy = rng.uniform(r + 1, h - r - 1)
    angle = rng.uniform(0, 2 * np.pi)
    thick = max(2, int(round(s * 0.07)))
    if kind == "circle":
        cv2.circle(img, (int(cx), int(cy)), int(r), color, -1, cv2.LINE_AA)
    elif kind == "ring":
        cv2.circle(img, (int(cx), int(cy)), int(r), color, thick, cv2.LINE_AA)
    elif kind == "square":
        cv2.fillPoly(img, [_poly(4, r, cx, cy, angle)], color, cv2.LINE_AA)
    elif kind == "triangle":
        cv2.fillPoly(img, [_poly(3, r, cx, cy, angle)], color, cv2.LINE_AA)
    elif kind == "star":
        cv2.fillPoly(img, [_poly(5, r, cx, cy, angle, inner=0.45)], color, cv2.LINE_AA)
    elif kind == "cross":
        for a in (angle, angle + np.pi / 2):
            dx, dy = r * np.cos(a), r * np.sin(a)
            cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), color, thick, cv2.LINE_AA)
    else:
        raise ValueError(kind)


def render_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR image of ``kind`` on a random gradient background with noise."""
    base = rng.integers(0, 256, size=3)
    grad = np.linspace(0, 1, size, dtype=np.float32)[None, :, None]
    tint = rng.integers(-60, 61, size=3)
    bg = np.clip(base[None, None, :] + grad * tint[None, None, :], 0, 255)
    img = np.broadcast_to(bg, (size, size, 3)).astype(np.uint8).copy()
    # The shape's colour is pushed away from the background so it is always visible.
    color = np.where(base > 127, rng.integers(0, 90, size=3), rng.integers(165, 256, size=3))
    _draw_shape(img, kind, rng, tuple(int(c) for c in color))
    noise = rng.normal(0, rng.uniform(2, 10), img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return img


def write_shapes(out: Path, per_class: int = 60, size: int = 64, seed: int = 0, classes=SHAPES) -> Dict[str, int]:
    """Write ``per_class`` PNGs per shape class into ``out/<class>/``.

    Returns:
        Images written per class.
    """
    out = Path(out)
    counts: Dict[str, int] = {}
    for ci, kind in enumerate(classes):
        rng = np.random.default_rng([seed, ci])
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = render_shape(kind, size, rng)
            if not cv2.imwrite(str(folder / f"{kind}_{i:04d}.png"), img):
                raise OSError(f"cannot write {folder / f'{kind}_{i:04d}.png'}")
        counts[kind] = per_class
    return counts


