"""Generated traffic signs and a dashcam-style drive video, drawn with OpenCV only.

Each sign is a vector drawing (polygons, discs, OpenCV's built-in font) rendered crisp once at high
resolution, then degraded the way a cheap camera on a moving car degrades it: perspective, scale,
rotation, cluttered background, lighting and shadows, blur, sensor noise and compression. The
images bootstrap a sign classifier before real photos exist; the video drives the product demo
and comes with its ground-truth timeline.

``turn_left`` is the exact mirror image of ``turn_right``, so a model trained on these images
must be trained without horizontal flips (``edgesight train --no-hflip``).
"""

from __future__ import annotations

import math
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError
from edgesight.edge.fsutil import write_json

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

_MASTER_SIDE = 256  # every render is warped from a cached master of this side
_SUPERSAMPLE = 4  # drawing resolution over output resolution, for clean anti-aliased edges
_SHIFT = 4  # fractional bits of OpenCV drawing coordinates, so shapes are placed to 1/16 px
_MIN_SIZE = 16
_SLOT_SECONDS = 2.0  # one sign per slot of the drive video: 10 classes need 20 s

Quad = np.ndarray  # (4, 2) float32 corners: top-left, top-right, bottom-right, bottom-left


# ----------------------------------------------------------------------------- drawing


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


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = [k for k in kinds if k not in SIGN_CLASSES]
    if unknown:
        raise ConfigError(f"unknown traffic sign {unknown[0]!r}; choose from: {', '.join(SIGN_CLASSES)}")


@lru_cache(maxsize=64)
def _premultiplied(kind: str, side: int) -> np.ndarray:
    """BGRA drawing of ``kind`` with colour premultiplied by alpha (read-only, cached)."""
    if kind in _MIRRORS:
        out = np.ascontiguousarray(_premultiplied(_MIRRORS[kind], side)[:, ::-1])
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
    _check_kinds([kind])
    if size < _MIN_SIZE:
        raise ConfigError(f"sign size {size} is too small; use at least {_MIN_SIZE} pixels")
    pre = _premultiplied(kind, size).astype(np.float32)
    alpha = pre[..., 3:]
    bgr = np.where(alpha > 0, pre[..., :3] * 255 / np.maximum(alpha, 1), 0)
    return np.dstack([np.clip(np.round(bgr), 0, 255), alpha]).astype(np.uint8)


# ------------------------------------------------------------------------- composing


def _sign_quad(centre, side: float, angle_deg: float, squeeze: float, skew: float, jitter: float, rng: np.random.Generator) -> Quad:
    """Corners of a sign seen from off-axis: narrowed by ``squeeze``, one edge taller by ``skew``."""
    half = side / 2
    w = half * squeeze
    pts = np.array([(-w, -half * (1 - skew)), (w, -half * (1 + skew)), (w, half * (1 + skew)), (-w, half * (1 - skew))])
    pts += rng.uniform(-jitter, jitter, (4, 2)) * side
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T + np.asarray(centre, np.float64)).astype(np.float32)


def _random_look(rng: np.random.Generator) -> Dict[str, float]:
    """Lighting of one sign: a shadow edge or gradient across it, exposure and faded paint."""
    shadow = rng.random() < 0.6
    return {
        "shadow_low": rng.uniform(0.35, 0.85) if shadow else 1.0,
        "shadow_angle": rng.uniform(0, 2 * np.pi),
        "shadow_at": rng.uniform(-0.35, 0.35),
        "shadow_soft": rng.uniform(0.03, 1.0),  # small: the hard edge of a branch; large: a gradient
        "gain": rng.uniform(0.75, 1.15),
        "fade": rng.uniform(0.0, 0.3),
    }


def _bbox(quad: Quad, w: int, h: int) -> Tuple[int, int, int, int]:
    x0, y0 = np.floor(quad.min(0)).astype(int)
    x1, y1 = np.ceil(quad.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
    return x0, y0, max(x1 - x0, 0), max(y1 - y0, 0)


def _composite(dst: np.ndarray, kind: str, quad: Quad, look: Dict[str, float]) -> Tuple[int, int, int, int]:
    """Warp the sign onto ``dst`` (in place) at ``quad``; returns its clipped (x, y, w, h)."""
    x, y, w, h = _bbox(quad, dst.shape[1], dst.shape[0])
    if w == 0 or h == 0:
        return x, y, w, h
    edge = float(np.linalg.norm(quad - np.roll(quad, 1, 0), axis=1).max())
    # Warp from the smallest cached level at least as large as the target: a homography that
    # shrinks by more than two aliases, and resizing the master on every call is slow.
    t = _MASTER_SIDE
    while t > 16 and t / 2 >= edge:
        t //= 2
    src = _premultiplied(kind, t)
    corners = np.array([(0, 0), (t, 0), (t, t), (0, t)], np.float32) - 0.5
    hom = cv2.getPerspectiveTransform(corners, quad - np.float32([x, y]))
    patch = cv2.warpPerspective(src, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    patch = patch.astype(np.float32)
    alpha = patch[..., 3:] / 255
    color = patch[..., :3]
    if look["fade"]:
        color = color * (1 - look["fade"]) + color.mean(2, keepdims=True) * look["fade"]
    gx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :]
    gy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None]
    u = gx * math.cos(look["shadow_angle"]) + gy * math.sin(look["shadow_angle"])
    lit = np.clip((u - look["shadow_at"]) / look["shadow_soft"] + 0.5, 0, 1)
    shade = (look["shadow_low"] + (1 - look["shadow_low"]) * lit) * look["gain"]
    region = dst[y : y + h, x : x + w].astype(np.float32)
    out = region * (1 - alpha) + color * shade[..., None]
    dst[y : y + h, x : x + w] = np.clip(out, 0, 255).astype(np.uint8)
    return x, y, w, h


def _draw_pole(dst: np.ndarray, quad: Quad, bottom: float, rng: np.random.Generator) -> None:
    """A grey post from the sign's centre down to ``bottom``, drawn before (behind) the sign."""
    cx, cy = quad.mean(0)
    side = float(np.linalg.norm(quad[1] - quad[0]))
    half = max(1.0, 0.035 * side)
    grey = float(rng.uniform(80, 170))
    cv2.rectangle(dst, (int(cx - half), int(cy)), (int(cx + half), int(bottom)), (grey, grey, grey + 5), -1)
    cv2.rectangle(dst, (int(cx + half * 0.3), int(cy)), (int(cx + half), int(bottom)), (grey * 0.7,) * 3, -1)


# ------------------------------------------------------------------------ backgrounds


def _muted(rng: np.random.Generator) -> Tuple[float, float, float]:
    """A colour from streets and gardens: greys, browns, greens; now and then a vivid one."""
    if rng.random() < 0.15:
        return tuple(float(v) for v in rng.uniform(0, 255, 3))
    base = rng.uniform(40, 200)
    tint = rng.normal(0, 18, 3) + (rng.choice([0, 1]) * np.array([-15, 20, -10]))
    return tuple(float(v) for v in np.clip(base + tint, 0, 255))


def _clutter(side: int, rng: np.random.Generator) -> np.ndarray:
    """A street-like background: sky or wall gradient, buildings, foliage, poles and wires."""
    top = np.array([rng.uniform(150, 250), rng.uniform(120, 220), rng.uniform(70, 200)]) if rng.random() < 0.6 else np.array(_muted(rng))
    bottom = np.array(_muted(rng))
    ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(3, 10))):
        what = rng.random()
        if what < 0.35:  # a building, standing on the ground, with a grid of windows
            x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2) * side).astype(int)
            y0 = int(rng.uniform(-0.2, 0.8) * side)
            col = _muted(rng)
            cv2.rectangle(img, (x0, y0), (x1, side), col, -1)
            dark = tuple(v * 0.55 for v in col)
            step = max(4, int(rng.uniform(0.08, 0.18) * side))
            for wy in range(max(y0, 0) + step // 2, side, step):
                for wx in range(max(x0, 0) + step // 3, min(x1, side) - step // 3, step):
                    cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), dark, -1)
        elif what < 0.65:  # foliage: a clump of green discs
            cx, cy = rng.uniform(0, 1, 2) * side
            for _ in range(int(rng.integers(3, 9))):
                g = rng.uniform(50, 150)
                col = (g * rng.uniform(0.3, 0.7), g, g * rng.uniform(0.4, 0.8))
                off = rng.normal(0, 0.08, 2) * side
                r = int(rng.uniform(0.04, 0.14) * side) + 1
                cv2.circle(img, (int(cx + off[0]), int(cy + off[1])), r, col, -1, cv2.LINE_AA)
        elif what < 0.85:  # a pole, a wire or a kerb
            p0 = rng.uniform(-0.1, 1.1, 2) * side
            p1 = rng.uniform(-0.1, 1.1, 2) * side
            thick = max(1, int(rng.uniform(0.005, 0.04) * side))
            cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), _muted(rng), thick, cv2.LINE_AA)
        else:  # a car, a bin, a passer-by
            c = tuple(int(v) for v in rng.uniform(0, 1, 2) * side)
            axes = tuple(int(v) + 1 for v in rng.uniform(0.05, 0.25, 2) * side)
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, _muted(rng), -1, cv2.LINE_AA)
    sigma = rng.uniform(0, 0.012) * side  # the background is out of focus to various degrees
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def _crop_background(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    crop = int(rng.uniform(0.3, 1.0) * min(h, w))
    crop = max(1, crop)
    x, y = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
    out = cv2.resize(image[y : y + crop, x : x + crop], (side, side), interpolation=cv2.INTER_AREA)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


# -------------------------------------------------------------------------- camera


def _motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)) * c, math.sin(math.radians(angle_deg)) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return k / k.sum()


def _tone_lut(rng: np.random.Generator) -> np.ndarray:
    """Per-channel 256-entry table of exposure, contrast, gamma and white-balance error."""
    x = np.arange(256, dtype=np.float32) / 255
    exposure = rng.uniform(0.6, 1.3)
    contrast = rng.uniform(0.7, 1.2)
    gamma = rng.uniform(0.7, 1.4)
    wb = rng.uniform(0.88, 1.12, 3)
    y = ((x * exposure) ** gamma - 0.5) * contrast + 0.5
    lut = np.clip(y[:, None] * wb[None, :] * 255, 0, 255)
    return lut.astype(np.uint8).reshape(256, 1, 3)


def _degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and pipeline damage at the final resolution: tone, blur, noise, JPEG."""
    size = img.shape[0]
    out = cv2.LUT(img, _tone_lut(rng))
    blur = rng.random()
    if blur < 0.35:
        length = int(rng.integers(2, max(3, int(0.06 * size)) + 1)) | 1
        out = cv2.filter2D(out, -1, _motion_kernel(length, rng.uniform(0, 180)))
    elif blur < 0.65:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.8) * size / 64)
    noise = rng.normal(0, rng.uniform(1, 8), out.shape)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


# ------------------------------------------------------------------------ datasets


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
    _check_kinds([kind])
    if size < _MIN_SIZE:
        raise ConfigError(f"image size {size} is too small for a traffic sign; use at least {_MIN_SIZE} pixels")
    # Compose at two or more times the output size, then area-resize: edges stay smooth.
    work = max(2 * size, 128)
    canvas = _crop_background(background, work, rng) if background is not None else _clutter(work, rng)
    side = rng.uniform(0.45, 0.9) * work
    slack = (work - side) / 2
    centre = work / 2 + rng.uniform(-slack, slack, 2)
    quad = _sign_quad(centre, side, rng.uniform(-15, 15), rng.uniform(0.75, 1.0), rng.uniform(-0.08, 0.08), 0.03, rng)
    if rng.random() < 0.7:
        _draw_pole(canvas, quad, work, rng)
    _composite(canvas, kind, quad, _random_look(rng))
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return _degrade(img, rng)


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
    _check_kinds(classes)
    if per_class < 0:
        raise ConfigError(f"per_class must be 0 or more, not {per_class}")
    if size < _MIN_SIZE:
        raise ConfigError(f"image size {size} is too small for a traffic sign; use at least {_MIN_SIZE} pixels")
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


# --------------------------------------------------------------------- drive video


def drive_roi(size: Tuple[int, int] = (640, 360)) -> Tuple[int, int, int, int]:
    """The square region of a drive video frame where signs appear, as (x, y, w, h).

    Args:
        size: Frame (width, height).

    Returns:
        A square on the right of the frame, about a third of its width.
    """
    w, h = size
    side = round(min(0.6 * h, 0.34 * w))
    return w - side - round(0.04 * w), round(0.08 * h), side, side


class _Road:
    """A straight two-lane road seen from the right lane, with scenery moving past."""

    SPEED = 15.0  # m/s
    CAM_HEIGHT = 1.3  # m
    LANE = 3.5  # m
    FAR = 220.0  # m; scenery beyond this is not drawn and recycles here

    def __init__(self, size: Tuple[int, int], fps: float, rng: np.random.Generator) -> None:
        self.w, self.h = size
        self.fps = fps
        self.horizon = 0.45 * self.h
        self.vp_x = 0.42 * self.w
        self.focal = 0.9 * self.w
        self.rng = rng
        self.static = self._static_layer()
        self.objects = [self._new_object(float(z)) for z in np.sort(rng.uniform(3, self.FAR, 26))]

    def _project(self, x: float, height: float, z: float) -> Tuple[float, float]:
        return self.vp_x + self.focal * x / z, self.horizon + self.focal * (self.CAM_HEIGHT - height) / z

    def _ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
        pts = [self._project(x0, 0, z0), self._project(x1, 0, z0), self._project(x1, 0, z1), self._project(x0, 0, z1)]
        return np.round(np.array(pts) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def _static_layer(self) -> np.ndarray:
        rng, w, h, hz = self.rng, self.w, self.h, int(self.horizon)
        img = np.empty((h, w, 3), np.float32)
        sky_top = np.array([rng.uniform(150, 230), rng.uniform(100, 170), rng.uniform(40, 110)])
        sky_low = np.array([rng.uniform(200, 250)] * 3) + rng.normal(0, 8, 3)
        t = np.linspace(0, 1, hz, dtype=np.float32)[:, None, None]
        img[:hz] = sky_top * (1 - t) + sky_low * t
        field = np.array([rng.uniform(40, 90), rng.uniform(90, 140), rng.uniform(70, 120)])
        t = np.linspace(0, 1, h - hz, dtype=np.float32)[:, None, None]
        img[hz:] = field * (0.75 + 0.35 * t)
        img = np.clip(img, 0, 255).astype(np.uint8)
        xs = np.linspace(0, w, 24)
        rise = np.convolve(rng.uniform(0.01, 0.09, 28), np.ones(5) / 5, "valid") * h
        hills = np.stack([xs, hz - rise], 1)
        hills = np.concatenate([hills, [(w, hz), (0, hz)]]).astype(np.int32)
        cv2.fillPoly(img, [hills], (150, 140, 120), cv2.LINE_AA)
        near, far = 1.0, 5000.0
        cv2.fillPoly(img, [self._ground_quad(-1.5 * self.LANE, 0.5 * self.LANE, near, far)], (96, 98, 100), cv2.LINE_AA, _SHIFT)
        for x in (-1.5 * self.LANE + 0.2, 0.5 * self.LANE - 0.2):
            cv2.fillPoly(img, [self._ground_quad(x - 0.08, x + 0.08, near, far)], (225, 228, 230), cv2.LINE_AA, _SHIFT)
        return img

    def _new_object(self, z: float) -> dict:
        rng = self.rng
        right = rng.random() < 0.5
        kind = "tree" if rng.random() < 0.6 else "building"
        x = rng.uniform(4, 14) if right else -rng.uniform(9, 25)
        return {"z": z, "x": x, "kind": kind, "color": _muted(rng), "w": rng.uniform(6, 14), "height": rng.uniform(5, 14), "crown": rng.uniform(1.5, 3.0)}

    def frame(self, index: int) -> np.ndarray:
        """The scene at frame ``index``, scenery advanced since the previous call."""
        img = self.static.copy()
        step = self.SPEED / self.fps
        period, dash = 12.0, 3.0
        offset = (index * step) % period
        x = -0.5 * self.LANE
        z = 1.0 - offset
        while z < 150:
            if z + dash > 1.0:
                cv2.fillPoly(img, [self._ground_quad(x - 0.07, x + 0.07, max(z, 1.0), z + dash)], (230, 230, 230), cv2.LINE_AA, _SHIFT)
            z += period
        for ob in self.objects:
            ob["z"] -= step
            if ob["z"] < 2.0:
                ob.update(self._new_object(ob["z"] + self.FAR))
        for ob in sorted(self.objects, key=lambda o: -o["z"]):
            self._draw_object(img, ob)
        return img

    def _draw_object(self, img: np.ndarray, ob: dict) -> None:
        z, x = ob["z"], ob["x"]
        if ob["kind"] == "building":
            x1 = x + (ob["w"] if x > 0 else -ob["w"])
            (ax, ay), (bx, by) = self._project(min(x, x1), ob["height"], z), self._project(max(x, x1), 0, z)
            if bx < 0 or ax >= self.w:
                return
            cv2.rectangle(img, (int(ax), int(ay)), (int(bx), int(by)), ob["color"], -1)
            band = max(1, int((by - ay) / 8))
            dark = tuple(v * 0.6 for v in ob["color"])
            for k in (2, 5):
                yb = int(ay + k * band)
                cv2.rectangle(img, (int(ax), yb), (int(bx), yb + band), dark, -1)
        else:
            (tx, ty), (_, gy) = self._project(x, 3.0, z), self._project(x, 0, z)
            r = self.focal * ob["crown"] / z
            if tx + r < 0 or tx - r >= self.w:
                return
            trunk = max(1, int(self.focal * 0.2 / z))
            cv2.rectangle(img, (int(tx) - trunk, int(ty)), (int(tx) + trunk, int(gy)), (40, 55, 75), -1)
            g = ob["color"][1]
            for dx, dy, k in ((0, -0.6, 1.0), (-0.5, -0.1, 0.7), (0.5, -0.2, 0.75)):
                c = (int(tx + dx * r), int(ty + dy * r))
                cv2.circle(img, c, max(1, int(k * r)), (0.45 * g * k, 0.8 * g + 30 * k, 0.55 * g), -1, cv2.LINE_AA)


def _schedule(n_frames: int, fps: float, classes: Sequence[str], rng: np.random.Generator) -> List[Tuple[str, int, int]]:
    """(label, first frame, last frame) of each sign: one per slot, each class once per round."""
    n = max(1, int(n_frames / fps / _SLOT_SECONDS))
    labels: List[str] = []
    while len(labels) < n:
        order = list(rng.permutation(list(classes)))
        if labels and len(order) > 1 and order[0] == labels[-1]:
            order.append(order.pop(0))  # never the same sign twice in a row
        labels.extend(order)
    slot = n_frames / n
    plan = []
    for i, label in enumerate(labels[:n]):
        lead = max(1, round(rng.uniform(0.15, 0.25) * fps))
        tail = max(1, round(rng.uniform(0.05, 0.1) * fps))
        start = int(i * slot) + lead
        end = max(start, int((i + 1) * slot) - 1 - tail)
        plan.append((str(label), start, end))
    return plan


def make_drive_video(
    path: Path,
    classes: Sequence[str] = SIGN_CLASSES,
    seconds: float = 20.0,
    fps: float = 15.0,
    size: Tuple[int, int] = (640, 360),
    seed: int = 0,
    sign_size: Tuple[float, float] = (0.4, 0.92),
) -> List[dict]:
    """Write a generated dashcam video of a drive past roadside traffic signs.

    Signs come one at a time, each inside the region ``drive_roi(size)``, growing as the car
    approaches for about 1.7 s with short gaps between them; a sign is drawn every 2 s, so
    ``seconds >= 2 * len(classes)`` shows every class. The frames get the same lighting,
    shadows, blur and noise as ``render_sign``; the mp4v codec adds the compression.

    Args:
        path: Output video file (``.mp4``); the timeline is written beside it as ``<stem>.json``.
        classes: Sign classes to show, a subset of ``SIGN_CLASSES``.
        seconds: Length of the video.
        fps: Frames per second.
        size: Frame (width, height) in pixels.
        seed: Seed of the generator; the same seed gives the same video and timeline.
        sign_size: Side of the sign over the side of the region of interest when it appears
            and when it is passed.

    Returns:
        The timeline, one dict per sign in order: ``label``, ``start_frame`` and ``end_frame``
        (first and last frame showing it, inclusive), ``bbox_at_end`` (x, y, w, h of the sign in
        ``end_frame``) and ``roi`` (x, y, w, h where signs appear, the same for every sign).

    Raises:
        ConfigError: Unknown classes or out-of-range numbers.
        OSError: The video cannot be written (no mp4v encoder in this OpenCV build).
    """
    _check_kinds(classes)
    if not classes:
        raise ConfigError("make_drive_video needs at least one sign class")
    if seconds <= 0 or fps <= 0:
        raise ConfigError(f"video length and frame rate must be positive, not {seconds} s at {fps} fps")
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 48:
        raise ConfigError(f"video frame {w}x{h} is too small; use at least 64x48")
    if not 0 < sign_size[0] <= sign_size[1] <= 1:
        raise ConfigError(f"sign_size must be two fractions of the region, smallest first, not {sign_size}")
    path = Path(path)
    n_frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    roi = drive_roi((w, h))
    plan = _schedule(n_frames, fps, classes, rng)
    road = _Road((w, h), fps, rng)
    signs = [_drive_sign(label, start, end, roi, sign_size, rng) for label, start, end in plan]
    # A small bank of noise fields, cycled at random: fresh gaussian noise every frame would
    # cost more than everything else together.
    noise = rng.normal(0, rng.uniform(2, 5), (4, h, w, 3)).astype(np.int16)
    lut_base = rng.uniform(0.85, 1.1, 3)
    gamma = rng.uniform(0.8, 1.25)
    light_phase = rng.uniform(0, 2 * np.pi, 2)
    ramp = np.arange(256, dtype=np.float32) / 255

    tmp = path.with_name(f".{path.stem}.partial{path.suffix or '.mp4'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot open a video writer for {path}: this OpenCV build has no mp4v encoder")
    timeline: List[dict] = []
    try:
        current = 0
        for i in range(n_frames):
            frame = road.frame(i)
            while current < len(signs) and i > signs[current]["end"]:
                current += 1
            blur = 1
            if current < len(signs) and i >= signs[current]["start"]:
                s = signs[current]
                bbox = _draw_drive_sign(frame, s, i, roi)
                blur = s["blur"]
                if i == s["end"]:
                    timeline.append({"label": s["label"], "start_frame": s["start"], "end_frame": s["end"], "bbox_at_end": list(bbox), "roi": list(roi)})
            # Passing clouds: exposure drifts slowly instead of jumping between signs.
            t = i / fps
            exposure = 1 + 0.12 * math.sin(t / 3.1 + light_phase[0]) + 0.06 * math.sin(t / 1.3 + light_phase[1])
            lut = np.clip(((ramp * exposure) ** gamma)[:, None] * lut_base[None, :] * 255, 0, 255)
            frame = cv2.LUT(frame, lut.astype(np.uint8).reshape(256, 1, 3))
            if blur > 1:
                frame = cv2.filter2D(frame, -1, _motion_kernel(blur, 0))
            frame = np.clip(frame + noise[int(rng.integers(len(noise)))], 0, 255).astype(np.uint8)
            writer.write(frame)
        writer.release()
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    write_json(path.with_suffix(".json"), {
        "video": path.name,
        "fps": fps,
        "size": [w, h],
        "frames": n_frames,
        "roi": list(roi),
        "classes": list(classes),
        "signs": timeline,
    })
    return timeline


def _drive_sign(label: str, start: int, end: int, roi, sign_size, rng: np.random.Generator) -> dict:
    """The fixed look of one roadside sign for its whole approach."""
    return {
        "label": label,
        "start": start,
        "end": end,
        "size0": rng.uniform(0.9, 1.1) * sign_size[0],
        "size1": min(1.0, rng.uniform(0.95, 1.03) * sign_size[1]),
        "angle": rng.uniform(-5, 5),
        "squeeze": rng.uniform(0.8, 1.0),
        "skew": rng.uniform(0.0, 0.06),
        "look": _random_look(rng),
        "blur": int(rng.choice([1, 1, 3, 5])),
        "rng_seed": int(rng.integers(2**31)),
    }


def _draw_drive_sign(frame: np.ndarray, s: dict, i: int, roi) -> Tuple[int, int, int, int]:
    rx, ry, rw, rh = roi
    p = (i - s["start"]) / max(1, s["end"] - s["start"])
    # The apparent size grows like 1/distance at constant speed: slowly, then fast.
    side = rw / ((1 - p) / s["size0"] + p / s["size1"])
    q = (side / rw - s["size0"]) / max(1e-6, s["size1"] - s["size0"])
    centre = (rx + rw * (0.44 + 0.12 * q), ry + rh * (0.52 - 0.05 * q))
    # The same corner jitter every frame, so the sign does not wobble.
    quad = _sign_quad(centre, side, s["angle"], s["squeeze"], s["skew"], 0.015, np.random.default_rng(s["rng_seed"]))
    # Drifting outwards as it nears, the sign stays inside the region a classifier watches.
    low, high = quad.min(0), quad.max(0)
    origin, extent = np.float32([rx, ry]), np.float32([rw, rh])
    shift = np.where(high - low > extent, origin + (extent - (high - low)) / 2 - low, np.clip(low, origin, origin + extent - (high - low)) - low)
    quad = quad + shift
    _draw_pole(frame, quad, frame.shape[0], np.random.default_rng(s["rng_seed"]))
    return _composite(frame, s["label"], quad, s["look"])
