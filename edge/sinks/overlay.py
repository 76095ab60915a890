"""Draw a classification result onto a frame: label, confidence, FPS and an optional ROI box."""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import cv2
import numpy as np

from ..frames import Result

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_BGR = (255, 255, 255)
_ROI_BGR = (0, 255, 255)
_OUTLINE_BGR = (0, 0, 0)
# Fraction of the original brightness kept under the text: dark enough for white text to read
# on a white scene, light enough that the scene stays visible behind the box.
_BACKING_KEEP = 0.3


_DIGITS = str.maketrans("0123456789", "0000000000")


@functools.lru_cache(maxsize=512)
def _text_size(template: str, scale: float, thickness: int):
    return cv2.getTextSize(template, _FONT, scale, thickness)


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts have ASCII glyphs only; make the substitution visible and explicit.
    return text.encode("ascii", "replace").decode("ascii")


def draw_overlay(
    image_bgr: np.ndarray,
    result: Result,
    fps: Optional[float] = None,
    roi: Optional[Sequence[int]] = None,
    copy: bool = True,
) -> np.ndarray:
    """Return a copy of ``image_bgr`` with the result drawn in the top-left corner.

    Text is white on a darkened backing box, so it reads on any background; font size, line
    thickness and margins scale with the shorter side of the frame (1.2 at 720 px).

    Args:
        image_bgr: ``HxWx3`` uint8 BGR image; it is not modified.
        result: the classification to show (label and score as a percentage).
        fps: frames per second to show on a second line, or None to leave it out.
        roi: ``(x, y, width, height)`` in pixels of the region the model sees, drawn as a
            rectangle, or None.
        copy: False draws on ``image_bgr`` itself and returns it (the camera loop does when no
            sink needs the unannotated frame, saving a full-frame copy per frame).

    Returns:
        A new ``HxWx3`` uint8 array (``image_bgr`` itself when ``copy`` is False).

    Raises:
        ValueError: the image is not ``HxWx3`` uint8, or the ROI has a non-positive size.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"draw_overlay needs an HxWx3 uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
    out = image_bgr.copy() if copy else image_bgr
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 600.0)
    thickness = max(1, round(scale * 2))
    pad = max(2, round(8 * scale))

    if roi is not None:
        x, y, rw, rh = (int(v) for v in roi)
        if rw <= 0 or rh <= 0:
            raise ValueError(f"ROI width and height must be positive, got {tuple(roi)}")
        # A dark outline under the bright line keeps the box visible on light and dark scenes.
        cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), _OUTLINE_BGR, thickness + 2, cv2.LINE_AA)
        cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), _ROI_BGR, thickness, cv2.LINE_AA)

    # An anomaly score is not a probability: 1.00 is the threshold.
    lines = [f"{_ascii(result.label)} {float(result.score):.2f}" if result.anomaly else f"{_ascii(result.label)} {100.0 * float(result.score):.1f}%"]
    if fps is not None:
        lines.append(f"{float(fps):.1f} FPS")
    # Sized for the text with every digit as 0 (Hershey digits share one width): the box keeps
    # its size while the score and FPS change, and the sizes come from a small cache.
    sizes = [_text_size(text.translate(_DIGITS), scale, thickness) for text in lines]
    line_h = max(th + baseline for (_, th), baseline in sizes)
    box_w = max(tw for (tw, _), _ in sizes) + 2 * pad
    box_h = len(lines) * line_h + (len(lines) + 1) * pad
    x1, y1 = min(w, pad + box_w), min(h, pad + box_h)
    backing = out[pad:y1, pad:x1]
    cv2.convertScaleAbs(backing, backing, _BACKING_KEEP)  # in place, no float copy

    y = pad
    for text, (_, baseline) in zip(lines, sizes):
        y += pad + line_h
        cv2.putText(out, text, (2 * pad, y - baseline), _FONT, scale, _TEXT_BGR, thickness, cv2.LINE_AA)
    return out
