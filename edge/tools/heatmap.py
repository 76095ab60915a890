"""Heatmap pictures with OpenCV only: colour overlays, captioned panels and grids of them.

Shared by ``edgesight explain`` (occlusion maps from a bundle, Grad-CAM from a Keras model) and
the ``errors.png`` of a run folder. Images are the model's input pixels (RGB or one grey
channel, uint8); pictures come back as BGR, OpenCV's order, ready for :func:`encode_png`.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import EdgesightError

# Small model inputs (16x16, 32x32) are scaled up to about this side so that they can be seen.
DISPLAY_SIDE = 224
CAPTION_LINE = 18
FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_bgr(pixels: np.ndarray) -> np.ndarray:
    """Model-input pixels (``HxWx3`` RGB, ``HxWx1`` or ``HxW`` grey) -> a BGR uint8 picture."""
    img = np.asarray(pixels)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def colorize(heatmap: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """A ``HxW`` map in [0, 1] -> a BGR picture (blue: 0, red: 1 with the default colormap)."""
    heat = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0)
    return cv2.applyColorMap(np.round(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), colormap)


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with its heatmap blended on top (BGR), at the image's size."""
    img = to_bgr(pixels)
    heat = np.asarray(heatmap, np.float32)
    if heat.shape != img.shape[:2]:
        heat = cv2.resize(heat, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(img, 1.0 - alpha, colorize(heat), alpha, 0.0)


def upscale(picture: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Scale a picture so that its longer side is about ``side`` pixels.

    Small inputs grow by a whole factor with nearest-neighbour, so each model pixel stays a
    crisp block; larger ones are resized smoothly.
    """
    h, w = picture.shape[:2]
    scale = side / max(h, w)
    if scale >= 2:
        f = int(scale)
        return cv2.resize(picture, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    if abs(scale - 1) < 1e-6:
        return picture
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _fit_text(text: str, width: int, scale: float) -> str:
    """``text`` cut (ending in "..") to fit ``width`` pixels; OpenCV's fonts are ASCII only."""
    text = text.encode("ascii", "replace").decode()
    fits = lambda t: cv2.getTextSize(t, FONT, scale, 1)[0][0] <= width - 8  # noqa: E731
    if fits(text):
        return text
    while len(text) > 1 and not fits(text + ".."):
        text = text[:-1]
    return text + ".."


def caption(picture: np.ndarray, lines: Sequence[str], scale: float = 0.45) -> np.ndarray:
    """The picture with a white strip of text lines under it (cut to the picture's width)."""
    w = picture.shape[1]
    strip = np.full((CAPTION_LINE * len(lines) + 6, w, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, _fit_text(line, w, scale), (4, CAPTION_LINE * (i + 1) - 3), FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([picture, strip])


def explanation_panel(pixels: np.ndarray, heatmap: np.ndarray, lines: Sequence[str], side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image and its heatmap overlay side by side, captioned with ``lines``."""
    left = upscale(to_bgr(pixels), side)
    right = upscale(overlay(pixels, heatmap), side)
    gap = np.full((left.shape[0], 6, 3), 255, np.uint8)
    return caption(np.hstack([left, gap, right]), lines)


def grid(tiles: Sequence[np.ndarray], cols: int = 5, pad: int = 6) -> np.ndarray:
    """BGR tiles (any sizes) in rows of ``cols`` on a white background."""
    if not tiles:
        raise EdgesightError("no pictures to put in a grid")
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    out = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def encode_png(picture: np.ndarray) -> bytes:
    """PNG bytes of a BGR picture."""
    ok, buf = cv2.imencode(".png", picture)
    if not ok:
        raise EdgesightError(f"could not encode a {picture.shape} picture as PNG")
    return buf.tobytes()
