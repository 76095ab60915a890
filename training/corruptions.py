"""Image corruptions for the robustness report: plain NumPy/OpenCV functions on uint8 images.

Each corruption takes one ``HxWxC`` uint8 image (C is 1 or 3, RGB order) at the model's input
size, a severity from 1 (mild) to 5 (severe) and a NumPy random generator, and returns an image
of the same shape and dtype. Severities follow the spirit of ImageNet-C (Hendrycks & Dietterich,
2019): five fixed levels per corruption, with ImageNet-C's own values where it has the corruption
(noise, blur, brightness, contrast, JPEG, fog, pixelation). Spatial parameters are fractions of
the image's shorter side, so a blur means the same on a 48-pixel and a 224-pixel input (ImageNet-C
defines them in pixels of a 224 image). Severity 0 is the clean image.

:func:`corrupt_batch` seeds every image's generator from ``(seed, corruption, severity, index)``,
so a report is reproducible and the float and int8 models see the same corrupted images.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
# ImageNet-C's spatial parameters are in pixels of a 224x224 image.
_REF_SIDE = 224.0

Fn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """One corruption: its function, the parameter each severity passes to it, and what that is."""

    name: str
    fn: Fn
    values: Tuple[float, ...]
    parameter: str
    description: str

    def to_dict(self) -> Dict[str, object]:
        return {"description": self.description, "parameter": self.parameter, "values": list(self.values)}


CORRUPTIONS: Dict[str, Corruption] = {}


def register(name: str, values: Sequence[float], parameter: str, description: str) -> Callable[[Fn], Fn]:
    """Add a corruption function to :data:`CORRUPTIONS` with its five severity values."""
    if len(values) != len(SEVERITIES):
        raise ValueError(f"{name}: give {len(SEVERITIES)} severity values")

    def wrap(fn: Fn) -> Fn:
        CORRUPTIONS[name] = Corruption(name, fn, tuple(float(v) for v in values), parameter, description)
        return fn

    return wrap


def _side(img: np.ndarray) -> int:
    return min(img.shape[0], img.shape[1])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _like(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    """OpenCV drops a single channel axis; put it back."""
    return out.reshape(img.shape)


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(_like(out, img))


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised, anti-aliased line of ``length`` pixels at ``angle`` radians, centred."""
    k = int(np.ceil(length / 2)) + 1
    kernel = np.zeros((2 * k + 1, 2 * k + 1), np.float64)
    t = np.linspace(-length / 2, length / 2, max(2, int(np.ceil(length * 8))))
    x, y = k + t * np.cos(angle), k + t * np.sin(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return kernel / kernel.sum()


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised disk of ``radius`` pixels with a one-pixel soft edge (a defocused lens)."""
    k = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0)
    return kernel / kernel.sum()


@register("gaussian_noise", (0.08, 0.12, 0.18, 0.26, 0.38), "standard deviation (fraction of 255)",
          "sensor noise: independent Gaussian noise per pixel and channel (ImageNet-C values)")
def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(img.astype(np.float32) + rng.normal(0.0, sigma * 255.0, img.shape).astype(np.float32))


@register("motion_blur", (0.03, 0.05, 0.075, 0.11, 0.15), "streak length (fraction of the image side)",
          "camera shake or a moving object: a straight streak in a random direction")
def motion_blur(img: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    return _filter(img, motion_kernel(max(1.0, length * _side(img)), rng.uniform(0.0, np.pi)))


@register("defocus_blur", tuple(r / _REF_SIDE for r in (3, 4, 6, 8, 10)), "disk radius (fraction of the image side)",
          "an out-of-focus lens: a disk kernel (ImageNet-C radii 3-10 pixels at 224)")
def defocus_blur(img: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    return _filter(img, disk_kernel(radius * _side(img)))


@register("dark", (1, 2, 3, 4, 5), "exposure cut in stops (gamma 2.2)",
          "under-exposure: linear light divided by 2^stops, so pixel values scale by 2^(-stops/2.2)")
def dark(img: np.ndarray, stops: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(img.astype(np.float32) * 2.0 ** (-stops / 2.2))


def add_value(img: np.ndarray, c: float) -> np.ndarray:
    """Add ``c`` (0-1) to the HSV value of every pixel, keeping hue and saturation.

    With hue and saturation fixed, RGB scales with the value (the channel maximum), so this is a
    per-pixel gain of ``min(V + c, 1) / V``; a black pixel (no hue) becomes grey ``c``.
    """
    x = img.astype(np.float32) / 255.0
    v = x.max(axis=-1, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    out = np.where(v > 0, x * (v_new / np.maximum(v, 1e-6)), v_new)
    return _to_uint8(out * 255.0)


@register("bright", (0.1, 0.2, 0.3, 0.4, 0.5), "HSV value added (0-1)",
          "over-exposure and glare: brightness raised in HSV space (ImageNet-C 'brightness')")
def bright(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return add_value(img, c)


@register("contrast", (0.4, 0.3, 0.2, 0.1, 0.05), "contrast factor around the image mean",
          "flat light or a low-contrast scene (ImageNet-C values)")
def contrast(img: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    m = x.mean()
    return _to_uint8((x - m) * c + m)


@register("jpeg", (25, 18, 15, 10, 7), "JPEG quality",
          "compression artefacts of a streamed or stored camera image (ImageNet-C qualities)")
def jpeg(img: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    colour = img.shape[-1] == 3
    src = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if colour else img
    ok, buf = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    return _like(cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if colour else out, img)


def smooth_field(shape: Tuple[int, int], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1] of ``shape`` (bicubic upsampling of a coarse grid)."""
    coarse = rng.uniform(0.0, 1.0, (cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo) if hi > lo else np.full(shape, 0.5, np.float32)


@register("haze", (0.7, 0.55, 0.42, 0.32, 0.24), "mean transmission (1: clear air)",
          "fog, haze or a dirty window: I = J t + A (1 - t), bright airlight A, transmission t varying smoothly by +-20%")
def haze(img: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    airlight = rng.uniform(0.8, 0.9) * 255.0
    tmap = np.clip(t * (0.8 + 0.4 * smooth_field(img.shape[:2], rng)), 0.0, 1.0)[..., None]
    return _to_uint8(img.astype(np.float32) * tmap + airlight * (1.0 - tmap))


@register("rotation", (5, 10, 15, 20, 30), "degrees, either direction",
          "a tilted camera or sign: rotation about the centre, borders reflected")
def rotation(img: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    angle = degrees if rng.uniform() < 0.5 else -degrees
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return _like(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101), img)


@register("occlusion", (0.05, 0.1, 0.15, 0.2, 0.3), "occluded fraction of the image area",
          "a sticker, branch or dirt on the lens: one rectangle of random colour and aspect ratio, inside the image")
def occlusion(img: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    bh = int(round(min(h, np.sqrt(area * h * w * aspect))))
    bw = int(round(min(w, area * h * w / max(bh, 1))))
    y0 = int(rng.integers(0, h - bh + 1))
    x0 = int(rng.integers(0, w - bw + 1))
    out = img.copy()
    out[y0 : y0 + bh, x0 : x0 + bw] = rng.integers(0, 256, img.shape[-1], dtype=np.uint8)
    return out


@register("low_resolution", (0.6, 0.5, 0.4, 0.3, 0.25), "scale of the captured image",
          "a distant object or a cheap sensor: shrunk (area) and enlarged back (bilinear); ImageNet-C pixelate's scales")
def low_resolution(img: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, int(round(w * scale))), max(1, int(round(h * scale)))), interpolation=cv2.INTER_AREA)
    return _like(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), img)


def corruption_names() -> List[str]:
    return list(CORRUPTIONS)


def select(names: Optional[str]) -> List[str]:
    """Corruption names from a comma-separated list (None or empty: all of them).

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    if not names:
        return corruption_names()
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in CORRUPTIONS]
    if unknown or not chosen:
        raise ConfigError(f"--corruptions: unknown corruption {', '.join(repr(n) for n in unknown) or repr(names)}; "
                          f"choose from {', '.join(CORRUPTIONS)}")
    return list(dict.fromkeys(chosen))


def _check(img: np.ndarray, name: str, severity: int) -> Corruption:
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption '{name}'; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ConfigError(f"severity {severity}: use 0 (clean) to {SEVERITIES[-1]}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an HxWx1 or HxWx3 uint8 image, got {img.dtype} {img.shape}")
    return CORRUPTIONS[name]


def corrupt(img: np.ndarray, name: str, severity: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """``img`` with corruption ``name`` at ``severity`` (0: an unchanged copy).

    Args:
        img: ``HxWxC`` uint8, C 1 or 3 (RGB).
        name: a key of :data:`CORRUPTIONS`.
        severity: 0 to 5.
        rng: random generator for the random parts (direction, position, noise).
    """
    c = _check(img, name, severity)
    if severity == 0:
        return img.copy()
    return c.fn(img, c.values[severity - 1], rng if rng is not None else np.random.default_rng(0))


def image_rng(seed: int, name: str, severity: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of batch size, order of corruptions and chunking."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), severity, index])


def corrupt_batch(images: np.ndarray, name: str, severity: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """``NxHxWxC`` uint8 images corrupted one by one, deterministically.

    Args:
        images: the batch.
        name, severity: as for :func:`corrupt`.
        seed: the report's seed.
        start: index of ``images[0]`` in the whole evaluation set (for chunked evaluation).
    """
    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = corrupt(img, name, severity, image_rng(seed, name, severity, start + i))
    return out
