"""A generated dashcam video of a drive past roadside traffic signs, with its ground truth.

A straight two-lane road with scenery moving past; one sign at a time grows as the car
approaches it, inside a fixed region of the frame (``drive_roi``) where a classifier watches.
The timeline of which sign shows in which frames is written beside the video, so a camera loop
run on it can be scored frame by frame.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError
from edgesight.edge.fsutil import write_json

from .scene import composite, draw_pole, motion_kernel, muted_colour, random_look, sign_quad
from .sign_drawing import SIGN_CLASSES, check_kinds

_SHIFT = 4  # fractional bits of OpenCV drawing coordinates, so the road is placed to 1/16 px
_SLOT_SECONDS = 2.0  # one sign per slot of the drive video: 10 classes need 20 s
# How the light of a dusk drive differs from daylight: exposure scale, per-channel gain in
# OpenCV's BGR order (blue kept, red lost: the sky's light after sunset), a steeper gamma (dark
# midtones) and the sensor noise of a camera at high gain.
DUSK = {"exposure": 0.4, "tint_bgr": (1.15, 0.9, 0.7), "gamma": 1.2, "noise": 3.0}


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
        return {"z": z, "x": x, "kind": kind, "color": muted_colour(rng), "w": rng.uniform(6, 14), "height": rng.uniform(5, 14), "crown": rng.uniform(1.5, 3.0)}

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
    dusk: bool = False,
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
        dusk: Drive at dusk: the same road, signs and timeline as the daylight drive of this
            seed, but darker, bluer and noisier (see ``DUSK``), as a camera sees them after sunset.

    Returns:
        The timeline, one dict per sign in order: ``label``, ``start_frame`` and ``end_frame``
        (first and last frame showing it, inclusive), ``bbox_at_end`` (x, y, w, h of the sign in
        ``end_frame``) and ``roi`` (x, y, w, h where signs appear, the same for every sign).

    Raises:
        ConfigError: Unknown classes or out-of-range numbers.
        OSError: The video cannot be written (no mp4v encoder in this OpenCV build).
    """
    check_kinds(classes)
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
    light = DUSK if dusk else {"exposure": 1.0, "tint_bgr": (1.0, 1.0, 1.0), "gamma": 1.0, "noise": 1.0}
    noise = rng.normal(0, rng.uniform(2, 5) * light["noise"], (4, h, w, 3)).astype(np.int16)
    lut_base = rng.uniform(0.85, 1.1, 3) * np.asarray(light["tint_bgr"])
    gamma = rng.uniform(0.8, 1.25) * light["gamma"]
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
            exposure = (1 + 0.12 * math.sin(t / 3.1 + light_phase[0]) + 0.06 * math.sin(t / 1.3 + light_phase[1])) * light["exposure"]
            lut = np.clip(((ramp * exposure) ** gamma)[:, None] * lut_base[None, :] * 255, 0, 255)
            frame = cv2.LUT(frame, lut.astype(np.uint8).reshape(256, 1, 3))
            if blur > 1:
                frame = cv2.filter2D(frame, -1, motion_kernel(blur, 0))
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
        "lighting": "dusk" if dusk else "day",
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
        "look": random_look(rng),
        "blur": int(rng.choice([1, 1, 3, 5])),
        "rng_seed": int(rng.integers(2**31)),
    }


def _draw_drive_sign(frame: np.ndarray, s: dict, i: int, roi) -> Tuple[int, int, int, int]:
    """Draw sign ``s`` into ``frame`` as it looks in frame ``i``; returns its (x, y, w, h)."""
    rx, ry, rw, rh = roi
    p = (i - s["start"]) / max(1, s["end"] - s["start"])
    # The apparent size grows like 1/distance at constant speed: slowly, then fast.
    side = rw / ((1 - p) / s["size0"] + p / s["size1"])
    q = (side / rw - s["size0"]) / max(1e-6, s["size1"] - s["size0"])
    centre = (rx + rw * (0.44 + 0.12 * q), ry + rh * (0.52 - 0.05 * q))
    # The same corner jitter every frame, so the sign does not wobble.
    quad = sign_quad(centre, side, s["angle"], s["squeeze"], s["skew"], 0.015, np.random.default_rng(s["rng_seed"]))
    # Drifting outwards as it nears, the sign stays inside the region a classifier watches.
    low, high = quad.min(0), quad.max(0)
    origin, extent = np.float32([rx, ry]), np.float32([rw, rh])
    shift = np.where(high - low > extent, origin + (extent - (high - low)) / 2 - low, np.clip(low, origin, origin + extent - (high - low)) - low)
    quad = quad + shift
    draw_pole(frame, quad, frame.shape[0], np.random.default_rng(s["rng_seed"]))
    return composite(frame, s["label"], quad, s["look"])
