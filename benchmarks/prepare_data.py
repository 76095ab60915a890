"""Export the offline benchmark datasets as image folders that ``edgesight train`` reads.

    python -m benchmarks.prepare_data digits benchmarks/data/digits32
    python -m benchmarks.prepare_data fashion benchmarks/data/fashion28

* ``digits``: scikit-learn's 1,797 8x8 digits, upscaled to 32x32 PNGs (bicubic), class folders.
* ``fashion``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), 28x28 PNGs in ``train/`` (60,000) and ``test/``
  (10,000) folders: the official split, so the test set is never seen in training.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import Dict, Optional

import cv2
import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def export_digits(out: Path, size: int = 32, limit: Optional[int] = None) -> Dict[str, int]:
    """Write scikit-learn's digits as ``out/<digit>/*.png`` (grayscale, ``size`` x ``size``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    counts: Dict[str, int] = {}
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        name = str(int(y))
        if limit is not None and counts.get(name, 0) >= limit:
            continue
        px = np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8)
        px = cv2.resize(px, (size, size), interpolation=cv2.INTER_CUBIC)
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:05d}.png"), px)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(prefix: str, root: Path) -> Path:
    for p in sorted(root.iterdir()):
        if p.name.startswith(prefix):
            return p
    raise FileNotFoundError(f"{root}/{prefix}*: not found; apt-get install dataset-fashion-mnist")


def export_fashion(out: Path, root: Path = FASHION_DIR, per_class: Optional[int] = None) -> Dict[str, int]:
    """Write Fashion-MNIST as ``out/{train,test}/<class>/*.png``; ``per_class`` caps each class."""
    counts: Dict[str, int] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx(_find(f"{prefix}-images", root))
        labels = _idx(_find(f"{prefix}-labels", root))
        seen: Dict[int, int] = {}
        for i, (img, y) in enumerate(zip(images, labels)):
            y = int(y)
            if per_class is not None and seen.get(y, 0) >= per_class:
                continue
            seen[y] = seen.get(y, 0) + 1
            folder = Path(out) / split / FASHION_CLASSES[y]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i:05d}.png"), img)
        counts[split] = sum(seen.values())
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["digits", "fashion"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=32, help="digits: image side")
    ap.add_argument("--per-class", type=int, help="cap images per class (per split for fashion)")
    a = ap.parse_args()
    if a.dataset == "digits":
        counts = export_digits(a.out, a.size, a.per_class)
    else:
        counts = export_fashion(a.out, per_class=a.per_class)
    print(f"wrote {sum(counts.values())} images to {a.out}: {counts}")


if __name__ == "__main__":
    main()
