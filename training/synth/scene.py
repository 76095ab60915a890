"""A drawn sign put into a picture, and the picture damaged the way a cheap camera damages it.

Pose (perspective, scale, rotation), lighting and shadows, a post, a cluttered street-like
background, then tone, blur, sensor noise and JPEG compression. Shared by the sign dataset
(``signs``) and the dashcam video (``drive``).
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import cv2
import numpy as np

from .sign_drawing import premultiplied

_MASTER_SIDE = 256  # every render is warped from a cached master of this side

Quad = np.ndarray  # (4, 2) float32 corners: top-left, top-right, bottom-right, bottom-left


def sign_quad(centre, side: float, angle_deg: float, squeeze: float, skew: float, jitter: float, rng: np.random.Generator) -> Quad:
    """Corners of a sign seen from off-axis: narrowed by ``squeeze``, one edge taller by ``skew``."""
    half = side / 2
    w = half * squeeze
    pts = np.array([(-w, -half * (1 - skew)), (w, -half * (1 + skew)), (w, half * (1 + skew)), (-w, half * (1 - skew))])
    pts += rng.uniform(-jitter, jitter, (4, 2)) * side
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts @ rot.T + np.asarray(centre, np.float64)).astype(np.float32)


def random_look(rng: np.random.Generator) -> Dict[str, float]:
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


def composite(dst: np.ndarray, kind: str, quad: Quad, look: Dict[str, float]) -> Tuple[int, int, int, int]:
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
    src = premultiplied(kind, t)
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


def draw_pole(dst: np.ndarray, quad: Quad, bottom: float, rng: np.random.Generator) -> None:
    """A grey post from the sign's centre down to ``bottom``, drawn before (behind) the sign."""
    cx, cy = quad.mean(0)
    side = float(np.linalg.norm(quad[1] - quad[0]))
    half = max(1.0, 0.035 * side)
    grey = float(rng.uniform(80, 170))
    cv2.rectangle(dst, (int(cx - half), int(cy)), (int(cx + half), int(bottom)), (grey, grey, grey + 5), -1)
    cv2.rectangle(dst, (int(cx + half * 0.3), int(cy)), (int(cx + half), int(bottom)), (grey * 0.7,) * 3, -1)


def muted_colour(rng: np.random.Generator) -> Tuple[float, float, float]:
    """A colour from streets and gardens: greys, browns, greens; now and then a vivid one."""
    if rng.random() < 0.15:
        return tuple(float(v) for v in rng.uniform(0, 255, 3))
    base = rng.uniform(40, 200)
    tint = rng.normal(0, 18, 3) + (rng.choice([0, 1]) * np.array([-15, 20, -10]))
    return tuple(float(v) for v in np.clip(base + tint, 0, 255))


def clutter(side: int, rng: np.random.Generator) -> np.ndarray:
    """A street-like background: sky or wall gradient, buildings, foliage, poles and wires."""
    top = np.array([rng.uniform(150, 250), rng.uniform(120, 220), rng.uniform(70, 200)]) if rng.random() < 0.6 else np.array(muted_colour(rng))
    bottom = np.array(muted_colour(rng))
    ramp = np.linspace(0, 1, side, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (side, side, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(3, 10))):
        what = rng.random()
        if what < 0.35:  # a building, standing on the ground, with a grid of windows
            x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2) * side).astype(int)
            y0 = int(rng.uniform(-0.2, 0.8) * side)
            col = muted_colour(rng)
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
            cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), muted_colour(rng), thick, cv2.LINE_AA)
        else:  # a car, a bin, a passer-by
            c = tuple(int(v) for v in rng.uniform(0, 1, 2) * side)
            axes = tuple(int(v) + 1 for v in rng.uniform(0.05, 0.25, 2) * side)
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, muted_colour(rng), -1, cv2.LINE_AA)
    sigma = rng.uniform(0, 0.012) * side  # the background is out of focus to various degrees
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def crop_background(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of a background photo, resized to ``side`` and mirrored half the time."""
    h, w = image.shape[:2]
    crop = int(rng.uniform(0.3, 1.0) * min(h, w))
    crop = max(1, crop)
    x, y = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
    out = cv2.resize(image[y : y + crop, x : x + crop], (side, side), interpolation=cv2.INTER_AREA)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel: the motion blur of ``length`` pixels along ``angle_deg``."""
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


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera and pipeline damage at the final resolution: tone, blur, noise, JPEG."""
    size = img.shape[0]
    out = cv2.LUT(img, _tone_lut(rng))
    blur = rng.random()
    if blur < 0.35:
        length = int(rng.integers(2, max(3, int(0.06 * size)) + 1)) | 1
        out = cv2.filter2D(out, -1, motion_kernel(length, rng.uniform(0, 180)))
    elif blur < 0.65:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.8) * size / 64)
    noise = rng.normal(0, rng.uniform(1, 8), out.shape)
    out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
