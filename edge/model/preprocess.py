"""Image decoding and resizing shared by training and the device runtime.

Training decodes its images with exactly these functions, so the runtime sees the same colour
conversion, interpolation and crop policy the model was trained with.
"""

from __future__ import annotations

from pathlib import Path
import struct
from typing import Optional, Tuple

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


class ImageTooLargeError(ImageReadError):
    """An image file has more pixels than the limit (``--max-pixels``)."""


def image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(width, height)`` from a PNG or JPEG header, without decoding; None for other formats
    or a header that cannot be read."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_REDUCED = {
    "rgb": {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8},
    "grayscale": {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}


def reduction(size: Tuple[int, int], target: Tuple[int, int]) -> int:
    """The largest of 1, 2, 4, 8 that keeps an image of ``size`` = (width, height) at least
    twice ``target`` = (height, width) on both sides, so resizing to the model input afterwards
    still has pixels to average."""
    (w, h), (th, tw) = size, target
    factor = 1
    for f in (2, 4, 8):
        if w // f >= 2 * tw and h // f >= 2 * th:
            factor = f
    return factor


def decode_image(data: bytes, color: str, where: str = "<bytes>", *, target: Optional[Tuple[int, int]] = None,
                 max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode encoded image bytes to uint8 ``HxWxC`` in RGB (C=3) or grayscale (C=1).

    Palette, RGBA, 16-bit and grayscale files are all converted to the requested colour mode
    (alpha is dropped, 16-bit is scaled to 8-bit).

    Args:
        target: ``(height, width)`` the image will be resized to; a PNG or JPEG much larger is
            decoded reduced by 2, 4 or 8 (a JPEG then never holds its full-size pixels).
        max_pixels: refuse a PNG or JPEG whose header declares more pixels than this.

    Raises:
        ImageTooLargeError: above ``max_pixels``.
        ImageReadError: empty or not decodable.
    """
    img = _decode(data, color, where, target, max_pixels)
    if img.ndim == 2:
        return img[:, :, None] if color == "grayscale" else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if color == "grayscale":
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode(data: bytes, color: str, where: str, target: Optional[Tuple[int, int]], max_pixels: Optional[int]) -> np.ndarray:
    """OpenCV's decoding of ``data``: BGR, or 2-D for ``grayscale``; see :func:`decode_image`."""
    if not data:
        raise ImageReadError(f"{where}: empty file (0 bytes)")
    size = image_size(data) if (target or max_pixels) else None
    if size and max_pixels and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(f"{where}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.1f} megapixels, above the "
                                 f"limit of {max_pixels / 1e6:g}; shrink the image or raise --max-pixels")
    factor = reduction(size, target) if size and target else 1
    buf = np.frombuffer(data, dtype=np.uint8)
    if factor > 1:
        flag = _REDUCED["grayscale" if color == "grayscale" else "rgb"][factor]
    else:
        flag = cv2.IMREAD_GRAYSCALE if color == "grayscale" else cv2.IMREAD_COLOR
    img = cv2.imdecode(buf, flag)
    if img is None or img.size == 0:
        raise ImageReadError(f"{where}: not a decodable image")
    return img


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror})") from e


def read_image(path: Path, color: str = "rgb", *, target: Optional[Tuple[int, int]] = None,
               max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as uint8 RGB (or grayscale with one channel); ``target`` and
    ``max_pixels`` as in :func:`decode_image`."""
    path = Path(path)
    return decode_image(_read_bytes(path), color, where=str(path), target=target, max_pixels=max_pixels)


def read_frame(path: Path, *, target: Optional[Tuple[int, int]] = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as a BGR uint8 frame, what a camera gives (``HxWx3``); ``target``
    and ``max_pixels`` as in :func:`decode_image`, so a large file is decoded reduced.

    Raises:
        ImageTooLargeError: above ``max_pixels``.
        ImageReadError: unreadable, empty or not decodable.
    """
    path = Path(path)
    return _decode(_read_bytes(path), "rgb", str(path), target, max_pixels)


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


def load_for_model(path: Path, spec: PreprocessSpec, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file and return it as the model's uint8 ``HxWxC`` input (a large file
    decoded reduced, see :func:`decode_image`)."""
    return prepare_image(read_image(path, spec.color, target=spec.size, max_pixels=max_pixels), spec)


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
