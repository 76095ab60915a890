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


def mirror_conflict(thumbs: Dict[str, np.ndarray]) -> Tuple[str, str]:
    """Two classes that are each other's mirror image, as ``(class, other)``, or ``("", "")``:
    the mirror image of each looks more like the other than like any class, itself included
    (left and right arrows, 2 and 5 in some fonts).

    Classes are compared by their mean thumbnail (gray, each image standardised), which keeps
    what is common to a class, such as the direction of an arrow, and averages the rest away.
    A class that is merely asymmetric (a shoe that always points left) is no reason: its
    mirror image is new to the model, not another class.
    """
    means = {}
    for label, t in thumbs.items():
        g = t.mean(-1)
        g = (g - g.mean((1, 2), keepdims=True)) / (g.std((1, 2), keepdims=True) + 1e-6)
        means[label] = g.mean(0)
    labels = list(means)
    nearest = {}
    for label in labels:
        mirrored = means[label][:, ::-1]
        nearest[label] = min(labels, key=lambda other: float(np.linalg.norm(mirrored - means[other])))
    for label in labels:
        other = nearest[label]
        if other != label and nearest[other] == label:
            return label, other
    return "", ""


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
