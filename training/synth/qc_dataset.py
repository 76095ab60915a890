"""The anomaly-detection dataset of generated QC parts: good parts to learn from, held-out good
parts and defects to set the threshold on and to evaluate with (``edgesight datasets synth
--kind qc-parts``)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from edgesight.edge.errors import ConfigError
from edgesight.edge.fsutil import write_bytes

from .qcparts import DEFECT_KINDS, _check, render_part


def _folder_rng(seed: int, kind: str, folder: str) -> np.random.Generator:
    # Keyed by names, not positions: changing one folder's count leaves the others' images alone.
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), zlib.crc32(folder.encode())])


def write_qc_parts(out: Path, kind: str = "pcb", good: int = 200, defects_per_kind: int = 20, size: int = 224,
                   seed: int = 0) -> Dict[str, int]:
    """Write an anomaly-detection dataset of one part kind.

    ``train/good`` holds ``good`` images; ``val/good`` and ``test/good`` a quarter of that each
    (rounded up); ``test/<defect>`` holds ``defects_per_kind`` images per defect kind and
    ``val/<defect>`` half that (rounded up). Folders that would stay empty are not made. Every
    PNG is written to a temporary file and renamed, so an interrupted run leaves no partial image.

    Args:
        out: Dataset folder to create or add to.
        kind: One of ``PART_KINDS``.
        good: Good training images.
        defects_per_kind: Test images per defect kind.
        size: Image side in pixels (64 or more).
        seed: Seed of the generator; the same seed writes the same images.

    Returns:
        Images written per folder, e.g. ``{"train/good": 200, "val/good": 50, "test/scratch": 20}``.

    Raises:
        ConfigError: An unknown kind, a negative count or a too small size.
        OSError: An image cannot be written.
    """
    _check(kind, size, None, None)
    for name, value in (("good", good), ("defects_per_kind", defects_per_kind)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a whole number, 0 or more, not {value!r}")
    plan = {"train/good": good, "val/good": -(-good // 4), "test/good": -(-good // 4)}
    for split, n in (("val", -(-defects_per_kind // 2)), ("test", defects_per_kind)):
        plan.update({f"{split}/{d}": n for d in DEFECT_KINDS})
    counts: Dict[str, int] = {}
    for folder, n in plan.items():
        if n == 0:
            continue
        rng = _folder_rng(seed, kind, folder)
        label = folder.split("/")[1]
        for i in range(n):
            img, _ = render_part(kind, size, rng, None if label == "good" else label)
            ok, buf = cv2.imencode(".png", img)
            if not ok:
                raise OSError(f"cannot encode {folder}/{label}_{i:04d}.png")
            write_bytes(Path(out) / folder / f"{label}_{i:04d}.png", buf.tobytes())
        counts[folder] = n
    return counts
