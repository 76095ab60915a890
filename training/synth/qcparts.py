"""Generated photos of parts on an inspection line, good and defective, for anomaly detection.

A fixed camera looks down on a conveyor belt; every image holds one part in its fixture: a turned
metal flange (``machined``: bore, hub, a ring of six drilled holes, chamfers, an engraved marking)
or a bare circuit board (``pcb``: solder mask, traces, pads, silkscreen, plated holes). Good parts
vary the way they do on a real line: a few percent of position, a few degrees of rotation, the
lighting, the belt under them, sensor noise, focus and JPEG. Defects are drawn on the part before
it is placed, so they move with it, and every render returns the defect's pixel mask.

An anomaly detector learns from ``train/good`` alone; ``val/`` and ``test/`` hold held-out good
parts and one folder per defect kind (``write_qc_parts``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError

PART_KINDS = ("machined", "pcb")
DEFECT_KINDS = ("scratch", "missing_hole", "stain", "crack", "misprint")
MIN_SIZE = 64

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LIGHT = math.radians(-135)  # the inspection lamp sits up and to the left of the camera
_GLYPHS = "0123456789ABCDEFHKLMNPRSTUVXZ"
_GOLD = np.array([88, 170, 212], np.float32)  # immersion gold pads and rings (BGR)


@dataclass(frozen=True)
class _Hole:
    x: float  # centre and radii in pixels of the part's own frame
    y: float
    r: float  # drilled radius; the inner 80 % is open, the rest is the visible wall
    rim: float  # outer radius of the chamfer (machined) or the copper ring (pcb)
    fillable: bool = True  # may be the missing hole


@dataclass(frozen=True)
class _Template:
    """The fixed geometry of one part design at one working resolution."""

    maps: Dict[str, np.ndarray]  # float32 coverage maps of the design's features
    solid: np.ndarray  # outline coverage, holes not cut
    alpha: np.ndarray  # outline coverage, holes cut
    holes: Tuple[_Hole, ...]
    mark: Tuple[str, Tuple[float, float], float, int]  # marking text, its origin, font scale, stroke
    inner: np.ndarray  # (N, 2) x, y of pixels well inside the material, to place defects
    edge: np.ndarray  # (M, 4) x, y, inward normal of pixels on the material's edges, to start cracks


def _disc(d: np.ndarray, r: float) -> np.ndarray:
    return np.clip(r - d + 0.5, 0, 1).astype(np.float32)


def _grid(w: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    return xx, yy


def _text(w: int, text: str, org: Tuple[float, float], scale: float, thick: int) -> np.ndarray:
    canvas = np.zeros((w, w), np.uint8)
    if text:
        cv2.putText(canvas, text, (int(round(org[0])), int(round(org[1]))), _FONT, scale, 255, thick, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


def _marking(w: int, text: str, cx: float, cy: float, height: float) -> Tuple[str, Tuple[float, float], float, int]:
    thick = max(2, int(round(height * w / 7)))
    scale = height * w / cv2.getTextSize(text, _FONT, 1.0, thick)[0][1]
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    return text, (cx * w - tw / 2, cy * w + th / 2), scale, thick


def _route(p, q, first: str = "h") -> List[Tuple[float, float]]:
    """A PCB-style trace from ``p`` to ``q``: straight along one axis, then at 45 degrees."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    diag = min(abs(dx), abs(dy))
    mid = (q[0] - math.copysign(diag, dx), p[1]) if first == "h" else (p[0], q[1] - math.copysign(diag, dy))
    return [p, mid, q]


def _pcb_layout(w: int) -> Tuple[Dict[str, np.ndarray], List[_Hole], Tuple]:
    u = float(w)
    copper = np.zeros((w, w), np.uint8)  # traces under the solder mask
    pads = np.zeros((w, w), np.uint8)  # exposed copper
    silk = np.zeros((w, w), np.uint8)

    def pt(x, y):
        return int(round(x * u)), int(round(y * u))

    def rect(img, cx, cy, hw, hh, thick=-1):
        cv2.rectangle(img, pt(cx - hw, cy - hh), pt(cx + hw, cy + hh), 255, thick, cv2.LINE_AA)

    def trace(points, width=0.007):
        cv2.polylines(copper, [np.array([pt(*p) for p in points], np.int32)], False, 255, max(1, int(round(width * u))), cv2.LINE_AA)

    def via(x, y):
        cv2.circle(pads, pt(x, y), max(2, int(round(0.008 * u))), 255, -1, cv2.LINE_AA)

    sw = max(1, int(round(0.004 * u)))
    # U1: a 28-pin quad package with traces to U2, to J1 and to vias.
    for i in range(7):
        off = (i - 3) * 0.016
        rect(pads, 0.34 + off, 0.355, 0.0045, 0.012)
        rect(pads, 0.34 + off, 0.525, 0.0045, 0.012)
        rect(pads, 0.255, 0.44 + off, 0.012, 0.0045)
        rect(pads, 0.425, 0.44 + off, 0.012, 0.0045)
    rect(silk, 0.34, 0.44, 0.062, 0.062, sw)
    cv2.circle(silk, pt(0.295, 0.395), max(1, int(round(0.006 * u))), 255, -1, cv2.LINE_AA)
    # U2: a 10-pin dual row package.
    for j in range(5):
        rect(pads, 0.58 + 0.03 * j, 0.315, 0.006, 0.013)
        rect(pads, 0.58 + 0.03 * j, 0.405, 0.006, 0.013)
        trace(_route((0.425, 0.392 + 0.016 * j), (0.58 + 0.03 * j, 0.405)))
        trace([(0.58 + 0.03 * j, 0.315), (0.58 + 0.03 * j, 0.285)])
        via(0.58 + 0.03 * j, 0.285)
    rect(silk, 0.64, 0.36, 0.078, 0.026, sw)
    # J1: five through-hole pins fanned out from U1's bottom row, and four mounting holes.
    holes = [_Hole(x * u, 0.66 * u, 0.012 * u, 0.021 * u) for x in (0.26, 0.32, 0.38, 0.44, 0.50)]
    holes += [_Hole(x * u, y * u, 0.017 * u, 0.029 * u) for x in (0.165, 0.835) for y in (0.255, 0.745)]
    for j, h in enumerate(holes[:5]):
        trace(_route((0.34 + (j - 2) * 0.016, 0.525), (h.x / u, 0.66), "v"))
    rect(silk, 0.38, 0.66, 0.15, 0.032, sw)
    rect(silk, 0.26, 0.66, 0.026, 0.026, sw)
    # Passives R1-R3, C1-C2 and their ground vias.
    for k, x in enumerate((0.56, 0.62, 0.68, 0.74, 0.80)):
        rect(pads, x, 0.505, 0.009, 0.007)
        rect(pads, x, 0.54, 0.009, 0.007)
        rect(silk, x, 0.5225, 0.016, 0.03, sw)
        trace([(x, 0.54), (x, 0.585)])
        via(x, 0.585)
        if k < 2:  # from U1's two lowest right-hand pins
            trace(_route((0.425, 0.488 - 0.016 * k), (x, 0.505)))
        else:
            trace([(x, 0.505), (x, 0.465)])
            via(x, 0.465)
    for i in range(0, 7, 2):
        trace([(0.243, 0.44 + (i - 3) * 0.016), (0.2, 0.44 + (i - 3) * 0.016)])
        via(0.2, 0.44 + (i - 3) * 0.016)
    labels = [("U1", 0.26, 0.315), ("U2", 0.755, 0.36), ("J1", 0.19, 0.665)]
    labels += [(name, x, 0.595) for name, x in zip(("R1", "R2", "R3", "C1", "C2"), (0.56, 0.62, 0.68, 0.74, 0.80))]
    maps = {"copper": copper.astype(np.float32) / 255, "pads": pads.astype(np.float32) / 255}
    maps["silk"] = np.clip(silk.astype(np.float32) / 255 + sum(_text(w, *_marking(w, *lab, 0.022)) for lab in labels), 0, 1)
    return maps, holes, _marking(w, "QC7 REV B", 0.68, 0.69, 0.036)


def _outline(kind: str, w: int) -> np.ndarray:
    xx, yy = _grid(w)
    if kind == "machined":
        return _disc(np.hypot(xx - w / 2, yy - w / 2), 0.37 * w)
    # A rounded rectangle, 0.74 x 0.56 of the frame, by its signed distance.
    rc = 0.025 * w
    qx, qy = np.abs(xx - w / 2) - 0.37 * w + rc, np.abs(yy - w / 2) - 0.28 * w + rc
    return _disc(np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0), rc)


@lru_cache(maxsize=8)
def _template(kind: str, w: int) -> _Template:
    solid = _outline(kind, w)
    if kind == "machined":
        maps: Dict[str, np.ndarray] = {}
        holes = [_Hole(w / 2 + 0.27 * w * math.cos(a), w / 2 + 0.27 * w * math.sin(a), 0.032 * w, 0.042 * w)
                 for a in np.radians(np.arange(0, 360, 60))]
        holes.append(_Hole(w / 2, w / 2, 0.09 * w, 0.104 * w, fillable=False))
        mark = _marking(w, "A7-2041", 0.5, 0.79, 0.038)
    else:
        maps, holes, mark = _pcb_layout(w)
    xx, yy = _grid(w)
    alpha = solid.copy()
    for h in holes:
        alpha *= 1 - _disc(np.hypot(xx - h.x, yy - h.y), 0.8 * h.r)
    maps["mark"] = _text(w, *mark)
    core = (alpha > 0.5).astype(np.uint8)
    inner = cv2.erode(core, np.ones((3, 3), np.uint8), iterations=max(2, int(0.03 * w)))
    edge = core - cv2.erode(core, np.ones((3, 3), np.uint8))
    gy, gx = np.gradient(cv2.GaussianBlur(alpha, (0, 0), 2.0))
    ey, ex = np.nonzero(edge)
    norm = np.hypot(gx[ey, ex], gy[ey, ex]) + 1e-6
    edges = np.stack([ex, ey, gx[ey, ex] / norm, gy[ey, ex] / norm], 1).astype(np.float32)
    in_yx = np.argwhere(inner > 0)
    return _Template(maps, solid, alpha, tuple(holes), mark, in_yx[:, ::-1].astype(np.float32), edges)


def _look(rng: np.random.Generator) -> Dict[str, float]:
    """The part-to-part appearance of one good part: finish, tint, highlight."""
    return {
        "level": rng.uniform(0.9, 1.1), "tint": rng.uniform(0.96, 1.04),
        "groove_phase": rng.uniform(0, 2 * np.pi), "groove_amp": rng.uniform(1.5, 4), "sheen": rng.uniform(12, 28),
        "hotspot": rng.uniform(8, 30), "hot_x": rng.uniform(0.33, 0.42), "hot_y": rng.uniform(0.33, 0.42),
        "grain": rng.uniform(1.5, 4.0), "grain_seed": float(rng.integers(2 ** 31)),
    }


def _hotspot(w: int, look: Dict[str, float], spread: float) -> np.ndarray:
    xx, yy = _grid(w)
    return look["hotspot"] * np.exp(-((xx / w - look["hot_x"]) ** 2 + (yy / w - look["hot_y"]) ** 2) / spread)


def _grain(w: int, look: Dict[str, float], sigma: float) -> np.ndarray:
    noise = np.random.default_rng(int(look["grain_seed"])).normal(0, look["grain"], (w, w)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), sigma)


def _paint_machined(tpl: _Template, w: int, look: Dict[str, float], phi: float, mark: np.ndarray) -> np.ndarray:
    xx, yy = _grid(w)
    r = np.hypot(xx - w / 2, yy - w / 2)
    th = np.arctan2(yy - w / 2, xx - w / 2)
    hub = _disc(r, 0.17 * w)
    # Turned faces: fine concentric grooves and the bow-tie sheen they give under one lamp.
    face = 150 * look["level"] + look["sheen"] * np.cos(2 * (th - phi)) + look["groove_amp"] * np.sin(r / (0.0016 * w) + look["groove_phase"])
    hub_face = 160 * look["level"] + 0.7 * look["sheen"] * np.cos(2 * (th - phi)) + look["groove_amp"] * np.sin(r / (0.0012 * w))
    surf = face * (1 - hub) + hub_face * hub
    step = _disc(np.abs(r - 0.17 * w), 0.006 * w)
    surf += step * 35 * np.cos(th - phi)
    chamfer = _disc(r, 0.37 * w) - _disc(r, 0.352 * w)
    surf += chamfer * (40 * np.cos(th - phi) - 10)
    surf += _hotspot(w, look, 0.03)
    surf += _grain(w, look, 0.8)
    # An engraved groove: dark, its lower right lip catching the lamp.
    lip = np.roll(mark, (1, 1), (0, 1))
    surf = surf - 70 * mark + 25 * np.clip(lip - mark, 0, 1)
    tint = np.array([1.03, 1.0, 0.97]) * np.array([look["tint"], 1.0, 2 - look["tint"]]) ** 0.3
    return surf[..., None] * tint.astype(np.float32)


def _paint_pcb(tpl: _Template, w: int, look: Dict[str, float], phi: float, mark: np.ndarray) -> np.ndarray:
    m = tpl.maps
    mask_col = np.array([42, 112, 28], np.float32) * look["level"] * np.array([look["tint"], 1, 1], np.float32)
    over_cu = np.array([58, 150, 62], np.float32) * look["level"]
    gold = _GOLD * (0.95 + 0.05 * look["tint"])
    cu = m["copper"][..., None]
    col = mask_col * (1 - cu) + over_cu * cu
    col = col * (1 - m["pads"][..., None]) + gold * m["pads"][..., None]
    silk = np.clip(m["silk"] + mark, 0, 1)[..., None]
    col = col * (1 - 0.9 * silk) + np.array([226, 232, 232], np.float32) * 0.9 * silk
    col += 1.3 * _hotspot(w, look, 0.05)[..., None]  # glossy solder mask
    col += _grain(w, look, 1.0)[..., None]
    edge = (tpl.solid - cv2.erode(tpl.solid, np.ones((3, 3), np.uint8), iterations=max(1, w // 250)))[..., None]
    return col * (1 - 0.6 * edge) + np.array([95, 150, 140], np.float32) * 0.6 * edge


def _hole_roi(h: _Hole, w: int, pad: float = 2.0):
    x0, y0 = max(int(h.x - h.rim - pad), 0), max(int(h.y - h.rim - pad), 0)
    x1, y1 = min(int(h.x + h.rim + pad) + 1, w), min(int(h.y + h.rim + pad) + 1, w)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), np.hypot(xx - h.x, yy - h.y), np.arctan2(h.y - yy, h.x - xx)


def _paint_holes(kind: str, col: np.ndarray, h_list, w: int, phi: float) -> None:
    for h in h_list:
        roi, d, towards = _hole_roi(h, w)
        ring = (_disc(d, h.rim) - _disc(d, h.r))[..., None]
        wall = (_disc(d, h.r) - _disc(d, 0.8 * h.r))[..., None]
        if kind == "machined":
            col[roi] += ring * (45 * np.cos(towards - phi) + 15)[..., None]
            col[roi] = col[roi] * (1 - wall) + 55 * wall
        else:
            col[roi] = col[roi] * (1 - ring) + _GOLD * ring
            col[roi] = col[roi] * (1 - wall) + _GOLD * 0.45 * wall


def _polyline_map(w: int, points: np.ndarray, thick: float) -> np.ndarray:
    """Anti-aliased line map, thinner towards both ends, drawn at 4x and reduced."""
    s = 4
    canvas = np.zeros((w * s, w * s), np.uint8)
    n = len(points) - 1
    for i in range(n):
        t = (i + 0.5) / n
        k = max(1, int(round(thick * s * (0.35 + 0.65 * math.sin(math.pi * t) ** 0.5))))
        a, b = (points[i] * s).astype(int), (points[i + 1] * s).astype(int)
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, k, cv2.LINE_8)
    return cv2.resize(canvas, (w, w), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _scratch(kind, tpl, w, col, alpha, rng, sev) -> np.ndarray:
    length, t = (0.10 + 0.25 * sev) * w, np.linspace(-0.5, 0.5, 13)[:, None]
    best = (-1.0, None)
    for _ in range(20):  # a slightly bent stroke, preferably one that stays on material
        c, ang, bend = tpl.inner[rng.integers(len(tpl.inner))], rng.uniform(0, np.pi), rng.uniform(-0.08, 0.08) * length
        pts = c + t * length * np.array([math.cos(ang), math.sin(ang)]) + bend * np.cos(np.pi * t) * np.array([-math.sin(ang), math.cos(ang)])
        xi, yi = np.clip(pts.astype(int), 0, w - 1).T
        best = max(best, (float(np.mean(alpha[yi, xi] > 0.5)), pts), key=lambda b: b[0])
        if best[0] > 0.9:
            break
    a = _polyline_map(w, best[1], max(2.0, (0.0045 + 0.004 * sev) * w)) * alpha
    if kind == "pcb":  # the solder mask is scraped off down to copper and laminate
        k = (0.65 + 0.35 * sev) * a[..., None]
        col[:] = col * (1 - k) + np.array([120, 165, 190], np.float32) * k
    else:
        sign = 1.0 if rng.random() < 0.7 else -1.0
        col += sign * (40 + 55 * sev) * a[..., None]
    return a


def _walk(p: np.ndarray, ang: float, length: float, step: float, rng: np.random.Generator) -> np.ndarray:
    """A jagged path: short steps whose heading wanders about ``ang``."""
    pts, heading = [p], ang
    for _ in range(max(2, int(length / step))):
        heading = 0.6 * heading + 0.4 * ang + rng.uniform(-0.8, 0.8)
        pts.append(pts[-1] + step * rng.uniform(0.6, 1.4) * np.array([math.cos(heading), math.sin(heading)]))
    return np.array(pts)


def _crack(kind, tpl, w, col, alpha, rng, sev) -> np.ndarray:
    x, y, nx, ny = tpl.edge[rng.integers(len(tpl.edge))]  # cracks start at an edge or a hole
    ang = math.atan2(ny, nx) + rng.uniform(-0.5, 0.5)
    length, step, thick = (0.06 + 0.16 * sev) * w, 0.012 * w, max(2.0, (0.003 + 0.004 * sev) * w)
    path = _walk(np.array([x, y]), ang, length, step, rng)
    a = _polyline_map(w, path, thick)
    if rng.random() < 0.5:
        fork = _walk(path[len(path) // 2], ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0), 0.4 * length, step, rng)
        a = np.maximum(a, _polyline_map(w, fork, 0.7 * thick))
    a *= alpha
    col *= 1 - (0.55 + 0.35 * sev) * a[..., None]
    return a


# Oil, rust, dried coolant, dirt on metal; oil, flux residue, dirt on boards (BGR).
_STAINS = {"machined": ((22, 28, 34), (35, 78, 140), (120, 105, 45), (58, 68, 80)), "pcb": ((20, 30, 38), (30, 140, 190), (45, 60, 75))}


def _stain(kind, tpl, w, col, alpha, rng, sev) -> np.ndarray:
    c = tpl.inner[rng.integers(len(tpl.inner))]
    rad = (0.035 + 0.06 * sev) * w
    blob = np.zeros((w, w), np.uint8)
    for _ in range(int(rng.integers(4, 8))):
        off = c + rng.normal(0, 0.45 * rad, 2)
        axes = tuple(int(v) + 1 for v in rng.uniform(0.35, 0.9, 2) * rad)
        cv2.ellipse(blob, tuple(int(v) for v in off), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    soft = cv2.GaussianBlur(blob.astype(np.float32) / 255, (0, 0), 0.2 * rad)
    mottle = cv2.GaussianBlur(rng.normal(0, 1, (w, w)).astype(np.float32), (0, 0), 0.15 * rad)
    a = np.clip((soft - 0.25) / 0.5, 0, 1) * (0.8 + 0.2 * mottle / (np.abs(mottle).max() + 1e-6)) * alpha
    colour = np.array(_STAINS[kind][int(rng.integers(len(_STAINS[kind])))], np.float32)
    k = ((0.5 + 0.4 * sev) * a)[..., None]  # translucent: the surface shows through
    col[:] = col * (1 - k) + colour * k
    return a * (a > 0.2)


def _misprint(tpl: _Template, w: int, rng: np.random.Generator, sev: float) -> np.ndarray:
    text, org, scale, thick = tpl.mark
    mode = rng.choice(["missing", "shifted", "wrong"])
    if mode == "missing":  # the print or the engraving stopped short, or never started
        drop = min(len(text), max(2, int(round(len(text) * (0.35 + 0.65 * sev)))))
        if rng.random() < 0.5:
            return _text(w, text[: len(text) - drop], org, scale, thick)
        (skip, _), _ = cv2.getTextSize(text[:drop], _FONT, scale, thick)
        return _text(w, text[drop:], (org[0] + skip, org[1]), scale, thick)
    if mode == "shifted":
        shift = (0.03 + 0.05 * sev) * w
        ang = rng.uniform(0, 2 * np.pi)
        return _text(w, text, (org[0] + shift * math.cos(ang), org[1] + shift * math.sin(ang)), scale, thick)
    chars = list(text)
    slots = [i for i, ch in enumerate(chars) if ch.isalnum()]
    n = min(len(slots), max(3, int(round(len(slots) * (0.3 + 0.6 * sev)))))
    for i in rng.choice(slots, n, replace=False):
        chars[i] = rng.choice([g for g in _GLYPHS if g != chars[i]])
    return _text(w, "".join(chars), org, scale, thick)


def _part(kind, tpl, w, phi, look, defect, drng, sev) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part in its own frame with ``defect`` drawn on it: colour, coverage, defect mask."""
    mark = tpl.maps["mark"]
    mask = np.zeros((w, w), np.float32)
    if defect == "misprint":
        new = _misprint(tpl, w, drng, sev)
        mask = cv2.dilate((np.abs(new - mark) > 0.25).astype(np.float32), np.ones((3, 3), np.uint8))
        mark = new
    paint = _paint_machined if kind == "machined" else _paint_pcb
    col = paint(tpl, w, look, phi, mark)
    holes, alpha = list(tpl.holes), tpl.alpha
    if defect == "missing_hole":  # never drilled: the surface, or a solid pad, where the hole was
        h = holes.pop(int(drng.choice([i for i, h in enumerate(holes) if h.fillable])))
        roi, d, _ = _hole_roi(h, w)
        alpha = alpha.copy()
        alpha[roi] = tpl.solid[roi]  # holes are far enough apart that none shares this square
        mask[roi] = _disc(d, h.rim if kind == "machined" else h.r)
        if kind == "pcb":
            pad = _disc(d, h.rim)[..., None]
            col[roi] = col[roi] * (1 - pad) + _GOLD * pad
        col[roi] *= 1 - (0.45 * (1 - sev) + 0.1) * _disc(d, 0.3 * h.r)[..., None]  # the spot drill mark
    _paint_holes(kind, col, holes, w, phi)
    painter = {"scratch": _scratch, "crack": _crack, "stain": _stain}.get(defect or "")
    if painter is not None:
        mask = painter(kind, tpl, w, col, alpha, drng, sev)
    return col, alpha, mask


def _belt(w: int, rng: np.random.Generator) -> np.ndarray:
    """Conveyor belt rubber: fine grain, streaks along the running direction, dust."""
    level = rng.uniform(30, 70)
    tone = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.06, 0.06, 3)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (w, w)).astype(np.float32), (0, 0), 1.0) * rng.uniform(5, 10)
    streak = cv2.GaussianBlur(rng.normal(0, 1, (w, 1)).astype(np.float32), (0, 0), 1.5) * rng.uniform(2, 8)
    belt = (level + grain + streak)[..., None] * tone.astype(np.float32)
    for _ in range(int(rng.poisson(6))):
        c = tuple(int(v) for v in rng.uniform(0, w, 2))
        cv2.circle(belt, c, int(rng.integers(1, 3)), (float(rng.uniform(70, 130)),) * 3, -1, cv2.LINE_AA)
    return belt


def _light(w: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness, a gradient across the field, vignetting and white balance, per pixel and channel."""
    xx, yy = (v / w - 0.5 for v in _grid(w))
    ang = rng.uniform(0, 2 * np.pi)
    ramp = 1 + rng.uniform(0, 0.3) * (xx * math.cos(ang) + yy * math.sin(ang))
    vignette = 1 - rng.uniform(0.1, 0.4) * (xx ** 2 + yy ** 2)
    return (rng.uniform(0.85, 1.15) * ramp * vignette)[..., None] * rng.uniform(0.95, 1.05, 3).astype(np.float32)


def _check(kind: str, size: int, defect: Optional[str], severity: Optional[float]) -> None:
    if kind not in PART_KINDS:
        raise ConfigError(f"kind {kind!r} is not a part kind; use one of {', '.join(PART_KINDS)}")
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ConfigError(f"size {size!r} is too small for a part; use at least {MIN_SIZE} pixels")
    if defect is not None and defect not in DEFECT_KINDS:
        raise ConfigError(f"unknown defect {defect!r}: use one of {', '.join(DEFECT_KINDS)}, or None for a good part")
    if severity is not None and (defect is None or not 0 <= severity <= 1):
        raise ConfigError(f"severity {severity} needs a defect and a value from 0 to 1")


def render_part(kind: str, size: int, rng: np.random.Generator, defect: Optional[str] = None,
                severity: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """One photo of a part on the belt under the inspection camera, good or with a defect.

    A good part is placed within 2.5 % of the frame of its fixture position and turned up to
    3 degrees; lamp, belt, focus, noise and JPEG vary. The randomness of the defect comes from
    its own stream, seeded from ``rng``: a defective render consumes ``rng`` exactly as a good
    one does, so two generators in the same state give the same part with and without it.

    Args:
        kind: One of ``PART_KINDS``.
        size: Side of the square output image in pixels (64 or more).
        rng: Source of all randomness; the same generator state gives the same image.
        defect: One of ``DEFECT_KINDS``, or None for a good part.
        severity: Size and contrast of the defect, 0 to 1 (default: random in 0.3-1).

    Returns:
        A ``size`` x ``size`` x 3 BGR uint8 image and a ``size`` x ``size`` uint8 mask, 255 on
        the defect's pixels (all zero for a good part).

    Raises:
        ConfigError: An unknown kind or defect, a too small size, a severity outside 0-1.
    """
    _check(kind, size, defect, severity)
    w = 2 * int(size)  # drawn at twice the size and reduced: thin lines stay smooth
    tpl = _template(kind, w)
    rot, scale, shift = rng.uniform(-3, 3), rng.uniform(0.985, 1.015), rng.uniform(-0.025, 0.025, 2) * w
    phi = _LIGHT + rng.normal(0, 0.05) + math.radians(rot)  # the lamp as seen from the turned part
    look = _look(rng)
    drng = np.random.default_rng(int(rng.integers(2 ** 63)))
    belt, light = _belt(w, rng), _light(w, rng)
    blur = rng.uniform(0.2, 0.7) if rng.random() < 0.6 else 0.0
    noise = rng.normal(0, rng.uniform(1.5, 4.0), (size, size, 3)).astype(np.float32)
    quality = int(rng.integers(70, 96)) if rng.random() < 0.7 else 0

    sev = (drng.uniform(0.3, 1.0) if severity is None else float(severity)) if defect else 0.0
    col, alpha, mask = _part(kind, tpl, w, phi, look, defect, drng, sev)
    m = cv2.getRotationMatrix2D((w / 2, w / 2), rot, scale)
    m[:, 2] += shift
    warp = cv2.warpAffine(np.dstack([col * alpha[..., None], alpha]), m, (w, w), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, m, (w, w), flags=cv2.INTER_LINEAR)
    a = warp[..., 3]
    shadow = cv2.GaussianBlur(np.roll(a, (int(0.018 * w), int(0.012 * w)), (0, 1)), (0, 0), 0.012 * w)
    img = (belt * (1 - 0.5 * shadow[..., None]) * (1 - a[..., None]) + warp[..., :3]) * light
    img = cv2.resize(np.clip(img, 0, 255), (size, size), interpolation=cv2.INTER_AREA)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    out = np.clip(img + noise, 0, 255).astype(np.uint8)
    if quality:
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)
    small = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return out, np.where(small > 0.25, 255, 0).astype(np.uint8)
