"""The traffic signs as vector drawings: polygons, discs and OpenCV's built-in font.

Each sign is drawn crisp once per size, supersampled, and cached; ``scene`` warps these drawings
into pictures. ``turn_left`` is the exact mirror image of ``turn_right``, so a model trained on
them must be trained without horizontal flips (``edgesight train --no-hflip``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Dict, Sequence, Tuple

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError

SIGN_CLASSES: Tuple[str, ...] = (
    "stop",
    "yield",
    "speed_30",
    "speed_50",
    "speed_70",
    "no_entry",
    "turn_left",
    "turn_right",
    "ahead_only",
    "priority_road",
)

# BGR paint colours, close to the European sign palette.
_RED = (38, 30, 200)
_WHITE = (245, 245, 245)
_BLUE = (160, 82, 12)
_YELLOW = (0, 196, 250)
_BLACK = (28, 28, 28)

_SUPERSAMPLE = 4  # drawing resolution over output resolution, for clean anti-aliased edges
_SHIFT = 4  # fractional bits of OpenCV drawing coordinates, so shapes are placed to 1/16 px
MIN_SIZE = 16  # smallest side, in pixels, at which the symbols stay legible


class _Canvas:
    """A square drawing and its coverage mask, addressed in fractions of the side (0..1)."""

    def __init__(self, side: int) -> None:
        self.side = side
        self.img = np.zeros((side, side, 3), np.uint8)
        self.mask = np.zeros((side, side), np.uint8)

    def _fixed(self, pts) -> np.ndarray:
        # Continuous [0, 1] maps onto pixel edges, so 0.5 is the exact centre of an even canvas
        # and a drawing symmetric in [0, 1] stays symmetric in pixels.
        return np.round((np.asarray(pts, np.float64) * self.side - 0.5) * (1 << _SHIFT)).astype(np.int32)

    def poly(self, pts, color, outline: bool = False) -> None:
        """Fill a polygon; ``outline`` marks it as the sign's outer edge (its alpha mask)."""
        p = [self._fixed(pts).reshape(-1, 1, 2)]
        cv2.fillPoly(self.img, p, color, cv2.LINE_AA, _SHIFT)
        if outline:
            cv2.fillPoly(self.mask, p, 255, cv2.LINE_AA, _SHIFT)

    def disc(self, radius: float, color, outline: bool = False) -> None:
        """Fill a disc centred on the canvas."""
        c = tuple(int(v) for v in self._fixed((0.5, 0.5)))
        r = round(radius * self.side * (1 << _SHIFT))
        cv2.circle(self.img, c, r, color, -1, cv2.LINE_AA, _SHIFT)
        if outline:
            cv2.circle(self.mask, c, r, 255, -1, cv2.LINE_AA, _SHIFT)

    def text(self, text: str, height: float, max_width: float, color, font=cv2.FONT_HERSHEY_DUPLEX, weight: float = 0.16) -> None:
        """Centre ``text`` with cap height ``height``, narrowed to fit ``max_width``.

        ``weight`` is the stroke width over the height; OpenCV 5's built-in fonts round it to a
        font weight, OpenCV 4's Hershey fonts use it as is.
        """
        thick = max(1, round(weight * height * self.side))
        (w, h), _ = cv2.getTextSize(text, font, 1.0, thick)
        scale = min(height * self.side / h, max_width * self.side / w)
        (w, h), _ = cv2.getTextSize(text, font, scale, thick)
        org = (round(self.side / 2 - w / 2), round(self.side / 2 + h / 2))
        cv2.putText(self.img, text, org, font, scale, color, thick, cv2.LINE_AA)


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([0.5 + radius * np.cos(a), 0.5 + radius * np.sin(a)], 1)


def _scaled(pts: np.ndarray, k: float, centre) -> np.ndarray:
    return (np.asarray(pts) - centre) * k + centre


def _stroke(path: np.ndarray, width: float) -> np.ndarray:
    """Polygon of a stroke of ``width`` along a polyline, with square ends."""
    d = np.gradient(path, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], 1) / np.linalg.norm(d, axis=1, keepdims=True)
    return np.concatenate([path + n * width / 2, (path - n * width / 2)[::-1]])


_DRAWERS: Dict[str, Callable[[_Canvas], None]] = {}
# Classes drawn as the horizontal mirror of another, so they differ only by direction.
_MIRRORS = {"turn_left": "turn_right"}


def _sign(name: str):
    def register(fn: Callable[[_Canvas], None]):
        _DRAWERS[name] = fn
        return fn

    return register


def _blue_disc(c: _Canvas) -> None:
    c.disc(0.49, _WHITE, outline=True)
    c.disc(0.465, _BLUE)


@_sign("stop")
def _stop(c: _Canvas) -> None:
    circum = 1 / math.cos(math.pi / 8)  # circumradius over apothem of an octagon
    c.poly(_regular(8, 0.495 * circum, math.pi / 8), _WHITE, outline=True)
    c.poly(_regular(8, 0.455 * circum, math.pi / 8), _RED)
    c.text("STOP", 0.2, 0.74, _WHITE, cv2.FONT_HERSHEY_DUPLEX, 0.2)


@_sign("yield")
def _yield(c: _Canvas) -> None:
    h = 0.98 * math.sqrt(3) / 2
    top, bottom = 0.5 - h / 2, 0.5 + h / 2
    tri = np.array([(0.01, top), (0.99, top), (0.5, bottom)])
    incentre = (0.5, top + h / 3)
    c.poly(tri, _RED, outline=True)
    c.poly(_scaled(tri, 0.6, incentre), _WHITE)


def _speed(limit: int) -> Callable[[_Canvas], None]:
    def draw(c: _Canvas) -> None:
        c.disc(0.49, _RED, outline=True)
        c.disc(0.4, _WHITE)
        # Large, bold digits: at 48 px they are all that tells the three limits apart.
        c.text(str(limit), 0.45, 0.66, _BLACK, cv2.FONT_HERSHEY_DUPLEX, 0.2)

    return draw


for _limit in (30, 50, 70):
    _sign(f"speed_{_limit}")(_speed(_limit))


@_sign("no_entry")
def _no_entry(c: _Canvas) -> None:
    c.disc(0.49, _WHITE, outline=True)
    c.disc(0.465, _RED)
    c.poly([(0.17, 0.41), (0.83, 0.41), (0.83, 0.59), (0.17, 0.59)], _WHITE)


@_sign("turn_right")
def _turn_right(c: _Canvas) -> None:
    _blue_disc(c)
    # Shaft up from the bottom, a quarter bend to the right, then the head pointing right.
    x, bend_y, r, y = 0.35, 0.52, 0.16, 0.36
    up = np.stack([np.full(8, x), np.linspace(0.8, bend_y, 8)], 1)
    a = np.linspace(np.pi, 1.5 * np.pi, 24)[1:]
    arc = np.stack([x + r + r * np.cos(a), bend_y + r * np.sin(a)], 1)
    along = np.stack([np.linspace(x + r, 0.6, 6)[1:], np.full(5, y)], 1)
    c.poly(_stroke(np.concatenate([up, arc, along]), 0.12), _WHITE)
    c.poly([(0.58, y - 0.15), (0.79, y), (0.58, y + 0.15)], _WHITE)


@_sign("ahead_only")
def _ahead_only(c: _Canvas) -> None:
    _blue_disc(c)
    c.poly([(0.44, 0.8), (0.56, 0.8), (0.56, 0.46), (0.44, 0.46)], _WHITE)
    c.poly([(0.3, 0.48), (0.5, 0.2), (0.7, 0.48)], _WHITE)


@_sign("priority_road")
def _priority_road(c: _Canvas) -> None:
    c.poly(_regular(4, 0.495, 0), _BLACK, outline=True)
    c.poly(_regular(4, 0.47, 0), _WHITE)
    c.poly(_regular(4, 0.32, 0), _YELLOW)


def check_kinds(kinds: Sequence[str]) -> None:
    """Raise ``ConfigError`` naming the valid classes if any of ``kinds`` is not a sign class."""
    unknown = [k for k in kinds if k not in SIGN_CLASSES]
    if unknown:
        raise ConfigError(f"unknown traffic sign {unknown[0]!r}; choose from: {', '.join(SIGN_CLASSES)}")


@lru_cache(maxsize=64)
def premultiplied(kind: str, side: int) -> np.ndarray:
    """BGRA drawing of ``kind`` with colour premultiplied by alpha (read-only, cached)."""
    if kind in _MIRRORS:
        out = np.ascontiguousarray(premultiplied(_MIRRORS[kind], side)[:, ::-1])
    else:
        c = _Canvas(side * _SUPERSAMPLE)
        _DRAWERS[kind](c)
        # Drawn on black, so after the area resize the colour is already alpha-premultiplied.
        img = np.dstack([c.img, c.mask])
        out = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    out.flags.writeable = False
    return out


def canonical_sign(kind: str, size: int) -> np.ndarray:
    """The clean, frontal, un-augmented drawing of a sign.

    Args:
        kind: One of ``SIGN_CLASSES``.
        size: Side of the square image in pixels.

    Returns:
        A ``size`` x ``size`` x 4 BGRA uint8 array; alpha is the sign's outline, so the sign can
        be pasted onto other pictures. ``turn_left`` is exactly ``turn_right`` mirrored.

    Raises:
        ConfigError: ``kind`` is not a known sign or ``size`` is too small.
    """
    check_kinds([kind])
    if size < MIN_SIZE:
        raise ConfigError(f"sign size {size} is too small; use at least {MIN_SIZE} pixels")
    pre = premultiplied(kind, size).astype(np.float32)
    alpha = pre[..., 3:]
    bgr = np.where(alpha > 0, pre[..., :3] * 255 / np.maximum(alpha, 1), 0)
    return np.dstack([np.clip(np.round(bgr), 0, 255), alpha]).astype(np.uint8)
