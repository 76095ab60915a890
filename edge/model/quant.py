"""Quantisation arithmetic and classifier post-processing in plain NumPy."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Affine quantisation ``q = round(x / scale) + zero_point``, saturated to ``dtype``."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``x = (q - zero_point) * scale`` as float32."""
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


def is_identity_pixels(dtype: np.dtype, scale: float, zero_point: int) -> bool:
    """True when quantising every pixel value 0..255 gives the pixel itself (uint8) or the
    pixel minus 128 (int8), so camera bytes can be fed with no float arithmetic.

    Calibration on real images gives a scale near, not exactly, 1 (e.g. 0.99988); what
    matters is that rounding maps all 256 values exactly, which this checks.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.int8)) or scale <= 0:
        return False
    pixels = np.arange(256, dtype=np.float32)
    expected = pixels if dtype == np.uint8 else pixels - 128
    return bool(np.array_equal(quantize(pixels, scale, zero_point, dtype).astype(np.float32), expected))


def input_feeder(dtype: np.dtype, scale: float, zero_point: int, mean: float = 0.0, std: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """A function turning uint8 pixels into a model input tensor of ``dtype``, decided once.

    Integer inputs whose quantisation is the identity on pixels skip float arithmetic entirely:
    uint8 is passed through and int8 is ``pixel - 128`` computed as an XOR of the sign bit.
    Otherwise pixels are normalised with ``(pixel - mean) / std`` and quantised if needed.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and mean == 0.0 and std == 1.0 and is_identity_pixels(dtype, scale, zero_point):
        if dtype == np.uint8:
            return lambda pixels: np.ascontiguousarray(pixels, dtype=np.uint8)
        sign = np.uint8(0x80)
        return lambda pixels: np.bitwise_xor(np.asarray(pixels, np.uint8), sign).view(np.int8)
    m, s = np.float32(mean), np.float32(std)

    def feed(pixels: np.ndarray) -> np.ndarray:
        x = np.asarray(pixels, np.float32)
        if mean != 0.0 or std != 1.0:
            x = (x - m) / s
        if dtype.kind == "f":
            return x.astype(dtype)
        return quantize(x, scale, zero_point, dtype)

    return feed


def pixels_to_input(pixels: np.ndarray, dtype: np.dtype, scale: float, zero_point: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Turn uint8 pixels into a model input tensor of ``dtype`` (see :func:`input_feeder`)."""
    return input_feeder(dtype, scale, zero_point, mean, std)(pixels)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries of a 1-D score vector, best first."""
    p = np.asarray(probs).ravel()
    k = min(k, p.size)
    if p.size <= 256:  # one sort of a short vector beats partition + sort
        idx = np.argsort(-p, kind="stable")[:k]
        return idx, p[idx]
    idx = np.argpartition(-p, k - 1)[:k]
    idx = idx[np.argsort(-p[idx], kind="stable")]
    return idx, p[idx]
