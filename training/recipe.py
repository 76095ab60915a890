"""The training recipe the data calls for: epochs, fine-tuning, class weights and augmentation.

``edgesight train`` leaves these choices to the data (and to where training starts) unless
they are given:

* **epochs** (``--epochs``): 20, or 8 when continuing from an earlier run (``--init-from``,
  with 3 of fine-tuning instead of 10).
* **fine-tuning** (``--fine-tune-epochs``): on for pretrained backbones. Phase 1 fits the head
  on the frozen backbone's cached features; phase 2 then trains the top
  ``--fine-tune-layers`` layers with AdamW, a one-epoch warm-up and cosine decay. A randomly
  initialised backbone trains end to end from the first epoch and has no phase 2.
* **class weights** (``--class-weights auto``): inverse-frequency weights when the largest
  class of the training split has more than :data:`IMBALANCE_RATIO` times the images of the
  smallest.
* **augmentation** (``--augment auto``, ``--hflip`` unset): ``light`` for a pretrained backbone
  or a large dataset, ``standard`` for a small one trained from scratch; mirrored images are
  left out when two classes are each other's mirror image (left and right arrows) or a class
  name says left or right. Grayscale data is noted: the
  presets' photometric changes (brightness, contrast) suit it, nothing adds colour.

Every choice is printed with its reason and recorded in the run's ``config.yaml``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edgesight.edge.model.preprocess import load_for_model
from edgesight.edge.model.spec import PreprocessSpec

from .data import Sample, Split

IMBALANCE_RATIO = 3.0
FINE_TUNE_EPOCHS = 10
EPOCHS = 20
# Starting from a trained model (--init-from), a few epochs adapt it to the added images
# (benchmarks/field_loop.py: 8 brought dusk drives within 3 points of daylight, 5 did not;
# the augmentation is chosen for the data as for any run: the demo's light preset, kept on the
# retrain, left dusk drives 5 points behind).
INIT_EPOCHS = 8
INIT_FINE_TUNE_EPOCHS = 3
FINE_TUNE_LAYERS = 60
FINE_TUNE_LR = 1e-4
# Images per class below which a network trained from scratch gets the standard preset.
SMALL_DATASET = 1000
PROBE_SIDE = 32
PROBE_PER_CLASS = 40
# Mirror pairs (mirror_conflict): orientation bins of the edge features, the classes each class
# is tested against, the share of a class's mirrored images that must lie nearer the other
# class, and how much more that must be than for its images as they are. With 32 to 40 images
# sampled per class, left and right turns of generated traffic signs gave shares of 0.81-1.00
# and gains of 0.72-0.90 (27 datasets); any other two classes of those signs, of generated
# shapes or of Fashion-MNIST at most 0.68 and 0.33 (98 datasets). With 10 to 16 images per
# class the two overlap.
ORIENTATIONS = 9
MIRROR_CANDIDATES = 3
MIRROR_SHARE = 0.6
MIRROR_GAIN = 0.5
SIDED = re.compile(r"(^|[^a-z])(left|right)([^a-z]|$)")


def imbalance(split: Split) -> Tuple[float, str, str]:
    """(largest / smallest class count in the training split, the largest, the smallest)."""
    counts = split.counts()["train"]
    present = {c: n for c, n in counts.items() if n}
    if not present:
        return 1.0, "", ""
    big = max(present, key=present.get)
    small = min(present, key=present.get)
    return present[big] / present[small], big, small


def _thumbnails(samples: Sequence[Sample], seed: int) -> Dict[str, np.ndarray]:
    """Up to :data:`PROBE_PER_CLASS` small RGB thumbnails per class, as float arrays."""
    spec = PreprocessSpec(height=PROBE_SIDE, width=PROBE_SIDE, color="rgb", interpolation="area")
    by_class: Dict[str, List[str]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s.path)
    rng = random.Random(seed)
    out = {}
    for label, paths in by_class.items():
        chosen = rng.sample(paths, min(PROBE_PER_CLASS, len(paths)))
        out[label] = np.stack([load_for_model(Path(p), spec) for p in chosen]).astype(np.float32)
    return out


def is_grayscale(thumbs: Dict[str, np.ndarray]) -> bool:
    """True when every sampled image has (nearly) equal R, G and B."""
    return all(float(np.abs(t - t.mean(-1, keepdims=True)).max()) <= 3.0 for t in thumbs.values())


def _edge_features(gray: np.ndarray) -> np.ndarray:
    """Where edges run which way: a histogram of gradient orientations (:data:`ORIENTATIONS`
    bins, unsigned) over overlapping cells a quarter of the image wide, scaled to unit length.

    Unlike pixels this keeps the outline of an arrow when it sits a few pixels off, and it
    does not depend on brightness or on whether the figure is lighter than its background.
    """
    n, h, w = gray.shape
    step = max(1, min(h, w) // 8)
    gray = gray[:, : h - h % step, : w - w % step]
    rows, cols = gray.shape[1] // step, gray.shape[2] // step
    gy, gx = np.gradient(gray, axis=(1, 2))
    mag = np.hypot(gx, gy).ravel()
    pos = (np.mod(np.arctan2(gy, gx), np.pi) * (ORIENTATIONS / np.pi)).ravel()
    low = np.floor(pos)
    frac = pos - low
    low = low.astype(np.int64) % ORIENTATIONS
    # Each pixel's magnitude goes to its step x step block, split between the two nearest bins.
    block = (np.arange(n)[:, None, None] * rows + np.arange(gray.shape[1])[None, :, None] // step) * cols \
        + np.arange(gray.shape[2])[None, None, :] // step
    block = block.ravel() * ORIENTATIONS
    size = n * rows * cols * ORIENTATIONS
    hist = (np.bincount(block + low, mag * (1 - frac), size)
            + np.bincount(block + (low + 1) % ORIENTATIONS, mag * frac, size)).reshape(n, rows, cols, ORIENTATIONS)
    cells = (hist[:, :-1, :-1] + hist[:, 1:, :-1] + hist[:, :-1, 1:] + hist[:, 1:, 1:]).reshape(n, -1)
    return cells / (np.linalg.norm(cells, axis=1, keepdims=True) + 1e-6)


def _nearest(queries: np.ndarray, images: np.ndarray, same: bool = False) -> np.ndarray:
    """Squared distance from each query to its nearest image (``same``: the queries are these
    images, or their mirror images, in order; each one's own image is left out).

    ``einsum`` rather than ``@``: the products are small, and handing each to the BLAS thread
    pool made the whole check take up to 2 s instead of 0.1 s on a busy 2-core machine.
    """
    d = (queries ** 2).sum(1)[:, None] + (images ** 2).sum(1)[None, :] - 2 * np.einsum("id,jd->ij", queries, images)
    if same:
        np.fill_diagonal(d, np.inf)
    return d.min(1)


def mirror_conflict(thumbs: Dict[str, np.ndarray]) -> Tuple[str, str]:
    """Two classes that are each other's mirror image, as ``(class, other)``, or ``("", "")``
    (left and right arrows, 2 and 5 in some fonts).

    Decided image by image, on the direction of edges (:func:`_edge_features`, gray
    thumbnails), with the nearest neighbour: of the images of class A, mirrored, count those
    nearer to an image of class B than to another image of A. A and B are a mirror pair when
    that is at least :data:`MIRROR_SHARE` of A's images and of B's, and at least
    :data:`MIRROR_GAIN` more than without mirroring (A's own images mostly lie nearer to A
    than to B: the two can be told apart at all). A class that is (nearly) symmetric stays
    itself when mirrored, so it is never in a pair, however noisy its images; neither is a
    class that is merely asymmetric (a shoe that always points left): its mirror image is new
    to the model, not another class. Each class is tested against the
    :data:`MIRROR_CANDIDATES` classes whose mean features lie nearest to its mirrored ones;
    of several pairs, the one with the largest gain is returned.
    """
    labels = [label for label, t in thumbs.items() if len(t)]
    if len(labels) < 2:
        return "", ""
    plain = {label: _edge_features(thumbs[label].mean(-1)) for label in labels}
    flipped = {label: _edge_features(thumbs[label][:, :, ::-1].mean(-1)) for label in labels}
    own = {label: (_nearest(plain[label], plain[label], True), _nearest(flipped[label], plain[label], True))
           for label in labels}

    def nearer(a: str, b: str) -> float:
        """Share of a's mirrored images nearer to b than to a, less the share without mirroring."""
        mirrored = float(np.mean(_nearest(flipped[a], plain[b]) < own[a][1]))
        if mirrored < MIRROR_SHARE:
            return 0.0
        return mirrored - float(np.mean(_nearest(plain[a], plain[b]) < own[a][0]))

    centres = np.stack([plain[label].mean(0) for label in labels])
    pairs = set()
    for i, a in enumerate(labels):
        gap = np.linalg.norm(centres - flipped[a].mean(0), axis=1)
        gap[i] = np.inf
        pairs.update((min(i, int(j)), max(i, int(j))) for j in np.argsort(gap)[:MIRROR_CANDIDATES] if j != i)
    best, pair = 0.0, ("", "")
    for i, j in sorted(pairs):
        gain = min(nearer(labels[i], labels[j]), nearer(labels[j], labels[i]))
        if gain >= MIRROR_GAIN and gain > best:
            best, pair = gain, (labels[i], labels[j])
    return pair


def choose(cfg, pretrained: bool, split: Split) -> Tuple[object, List[str]]:
    """The config with its automatic choices settled, and one line per choice made.

    Args:
        cfg: the :class:`~edgesight.training.config.TrainConfig` as given.
        pretrained: the backbone starts from loaded weights (transfer learning).
        split: the dataset split (its training images are sampled to decide).
    """
    lines: List[str] = []
    changes: Dict[str, object] = {}

    ratio, big, small = imbalance(split)
    if cfg.class_weights == "auto":
        on = ratio > IMBALANCE_RATIO
        changes["class_weights"] = "balanced" if on else "none"
        counts = split.counts()["train"]
        if on:
            lines.append(f"class weights: on (auto: '{big}' has {counts[big]} training images, '{small}' {counts[small]}, "
                         f"{ratio:.1f}:1, beyond {IMBALANCE_RATIO:g}:1)")

    init = bool(getattr(cfg, "init_from", None))
    if cfg.epochs is None:
        changes["epochs"] = INIT_EPOCHS if init else EPOCHS
    if cfg.fine_tune_epochs is None:
        tune = INIT_FINE_TUNE_EPOCHS if init else FINE_TUNE_EPOCHS
        changes["fine_tune_epochs"] = tune if pretrained else 0
        if pretrained:
            lines.append(f"fine-tuning: on (auto for pretrained weights: {tune} epochs of the top "
                         f"{cfg.fine_tune_layers or 'all'} layers after the head; --fine-tune-epochs 0 turns it off)")
    if init and (cfg.epochs is None or (pretrained and cfg.fine_tune_epochs is None)):
        epochs = changes.get("epochs", cfg.epochs)
        lines.append(f"continuing from {cfg.init_from}: up to {epochs} epochs"
                     + (f" and {changes.get('fine_tune_epochs', cfg.fine_tune_epochs)} of fine-tuning" if pretrained else "")
                     + " (a short retrain; --epochs and --fine-tune-epochs set them)")

    if cfg.augment == "auto" or cfg.hflip is None:
        thumbs = _thumbnails(split.train, cfg.seed)
        gray = is_grayscale(thumbs)
        if cfg.augment == "auto":
            per_class = np.median(list(split.counts()["train"].values())) if split.classes else 0
            if pretrained:
                preset, why = "light", "pretrained backbone"
            elif per_class < SMALL_DATASET:
                start = "continued" if init else "trained from scratch"
                preset, why = "standard", f"{start} on {per_class:.0f} images per class"
            else:
                preset, why = "light", f"{per_class:.0f} images per class"
            changes["augment"] = preset
            lines.append(f"augmentation: {preset} (auto: {why}; {'grayscale' if gray else 'colour'} images)")
        if cfg.hflip is None:
            sided = [c for c in split.classes if SIDED.search(c.lower())]
            cls, other = mirror_conflict(thumbs)
            if sided:
                changes["hflip"] = False
                lines.append(f"mirrored images: off (auto: class '{sided[0]}' names a side)")
            elif cls:
                changes["hflip"] = False
                lines.append(f"mirrored images: off (auto: '{cls}' and '{other}' are each other's mirror image)")
            else:
                changes["hflip"] = True
                lines.append("mirrored images: on (auto: no class turns into another when mirrored)")
    return cfg.updated(**changes), lines
