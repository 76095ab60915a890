"""Image decoding and resizing shared by training and the device runtime.

Training decodes its images with exactly these functions, so the runtime sees the same colour
conversion, interpolation and crop policy the model was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from ..errors import EdgesightError
from .spec import PreprocessSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_INTERP = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "bicubic": cv2.INTER_CUBIC,
}


class ImageReadError(EdgesightError):
    """An image file is missing, empty, or cannot be decoded."""


def is_image_path(path: Path) -> bool:
    """True when ``path`` has one of the accepted image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes, color: str, where: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to uint8 ``HxWxC`` in RGB (C=3) or grayscale (C=1).

    Palette, RGBA, 16-bit and grayscale files are all converted to the requested colour mode
    (alpha is dropped, 16-bit is scaled to 8-bit).
    """
    if not data:
        raise ImageReadError(f"{where}: empty file (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if color == "grayscale" else cv2.IMREAD_COLOR
    img = cv2.imdecode(buf, flag)
    if img is None or img.size == 0:
        raise ImageReadError(f"{where}: not a decodable image")
    if color == "grayscale":
        return img[:, :, None]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: Path, color: str = "rgb") -> np.ndarray:
    """Read an image file as uint8 RGB (or grayscale with one channel)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror})") from e
    return decode_image(data, color, where=str(path))


def resize(img: np.ndarray, size: Tuple[int, int], mode: str = "stretch", interpolation: str = "bilinear") -> np.ndarray:
    """Resize ``img`` (HxWxC) to ``size`` = (height, width) with the given policy.

    ``stretch`` ignores the aspect ratio; ``crop`` scales the shorter side to fit and cuts the
    centre; ``pad`` scales the longer side to fit and pads the rest with black.
    """
    th, tw = size
    h, w = img.shape[:2]
    channels = img.shape[2] if img.ndim == 3 else 1
    interp = _INTERP[interpolation]
    if mode == "stretch" or (h, w) == (th, tw):
        out = img if (h, w) == (th, tw) else cv2.resize(img, (tw, th), interpolation=interp)
    elif mode == "crop":
        scale = max(th / h, tw / w)
        # Crop first in source coordinates so we never resize pixels we throw away.
        ch, cw = min(h, round(th / scale)), min(w, round(tw / scale))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        out = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (tw, th), interpolation=interp)
    elif mode == "pad":
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = cv2.resize(img, (nw, nh), interpolation=interp)
        out = np.zeros((th, tw, channels), dtype=img.dtype)
        y0, x0 = (th - nh) // 2, (tw - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = inner.reshape(nh, nw, channels)
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def prepare_image(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize a decoded image (RGB or grayscale, uint8) to the model's input, still uint8."""
    return resize(img, spec.size, spec.resize, spec.interpolation)


def load_for_model(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """Read an image file and return it as the model's uint8 ``HxWxC`` input."""
    return prepare_image(read_image(path, spec.color), spec)


def parse_roi(text: str) -> Tuple[int, int, int, int]:
    """``"x,y,w,h"`` -> a tuple of ints (a fixed inspection window, e.g. on a conveyor)."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise EdgesightError(f"--roi '{text}': expected x,y,w,h in pixels, e.g. 100,80,400,400") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise EdgesightError(f"--roi '{text}': width and height must be positive and x, y not negative")
    return x, y, w, h


def crop_roi(image: np.ndarray, roi: Tuple[int, int, int, int]) -> np.ndarray:
    """The ``x,y,w,h`` window of ``image``; raises if it lies outside the frame."""
    x, y, w, h = roi
    H, W = image.shape[:2]
    if x + w > W or y + h > H:
        raise EdgesightError(f"--roi {x},{y},{w},{h} lies outside the {W}x{H} frame; choose a window inside it")
    return image[y : y + h, x : x + w]


def frame_to_pixels(frame_bgr: np.ndarray, spec: PreprocessSpec, roi=None) -> np.ndarray:
    """A BGR camera frame -> the model's uint8 input (``HxWxC``), matching training exactly.

    Resizing acts on each channel independently, so resizing before the BGR->RGB swap gives the
    same pixels as training (which swaps first) while converting far fewer of them.
    """
    img = crop_roi(frame_bgr, roi) if roi else frame_bgr
    if spec.color == "grayscale":
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return resize(img if img.ndim == 3 else img[:, :, None], spec.size, spec.resize, spec.interpolation)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    out = resize(img, spec.size, spec.resize, spec.interpolation)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
