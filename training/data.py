"""Dataset discovery, validation and the train/val/test split.

Accepted layouts:

* a folder of class sub-folders (``root/<class>/**/*.jpg``), the layout of Keras, MediaPipe
  Model Maker and Ultralytics;
* the same with the split already made: ``root/train/<class>/``, ``root/val/`` (or ``valid/``,
  ``validation/``), ``root/test/``;
* a CSV manifest with rows ``path,label`` (optionally ``path,label,split``), paths relative to the
  CSV's folder; a header row is recognised and skipped.

In a folder of class sub-folders, a ``split.json`` beside them pins the split of the images it
lists (see :mod:`.pins`), and an ``_uncertain/`` folder (a capture folder's unlabelled frames)
is not a class.

Every candidate image is decoded once; corrupt, truncated, zero-byte and non-image files are
skipped and listed with the reason, never a crash. This module does not import TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgesight.edge.captures import UNCERTAIN_DIR
from edgesight.edge.errors import DatasetError
from edgesight.edge.fsutil import write_json, write_text
from edgesight.edge.model.preprocess import IMAGE_EXTENSIONS, ImageReadError, decode_image, is_image_path

from .pins import read_pins
from .walk import DatasetWalk, check_class_name, walk_files

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
SPLIT_FORMAT = "edgesight.split/1"


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``path`` is absolute."""

    path: str
    label: str


@dataclass
class ScannedDataset:
    """The usable images of a dataset source, grouped by the split they came with.

    ``given`` maps ``train``/``val``/``test`` (pre-split layouts, CSV with a split column) or
    ``all`` (everything else) to samples. ``skipped`` lists ``(path, reason)``.
    """

    source: Path
    root: Path
    layout: str
    classes: Tuple[str, ...]
    given: Dict[str, List[Sample]]
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.given.values())


@dataclass
class Split:
    """A train/val/test split over absolute image paths, saved as ``split.json``."""

    root: Path
    source: str
    layout: str
    classes: Tuple[str, ...]
    seed: int
    val_fraction: float
    test_fraction: float
    train: List[Sample]
    val: List[Sample]
    test: List[Sample]
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def samples(self, name: str) -> List[Sample]:
        if name == "all":
            return self.train + self.val + self.test
        if name not in SPLITS:
            raise DatasetError(f"unknown split '{name}': use one of train, val, test, all")
        return getattr(self, name)

    def label_indices(self, samples: Sequence[Sample]) -> List[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[s.label] for s in samples]

    def counts(self) -> Dict[str, Dict[str, int]]:
        out = {}
        for name in SPLITS:
            c = {k: 0 for k in self.classes}
            for s in getattr(self, name):
                c[s.label] += 1
            out[name] = c
        return out

    def to_dict(self) -> dict:
        def rel(p: str) -> str:
            try:
                return str(Path(p).relative_to(self.root))
            except ValueError:
                return p

        return {
            "format": SPLIT_FORMAT,
            "root": str(self.root),
            "source": self.source,
            "layout": self.layout,
            "classes": list(self.classes),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "counts": self.counts(),
            **{name: [[rel(s.path), s.label] for s in getattr(self, name)] for name in SPLITS},
            "skipped": [list(x) for x in self.skipped],
        }

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Split":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            root = Path(d["root"])

            def samples(name: str) -> List[Sample]:
                return [Sample(str(p if Path(p).is_absolute() else root / p), lab) for p, lab in d[name]]

            return cls(
                root=root,
                source=d["source"],
                layout=d["layout"],
                classes=tuple(d["classes"]),
                seed=int(d["seed"]),
                val_fraction=float(d["val_fraction"]),
                test_fraction=float(d["test_fraction"]),
                train=samples("train"),
                val=samples("val"),
                test=samples("test"),
                skipped=[tuple(x) for x in d.get("skipped", [])],
            )
        except FileNotFoundError as e:
            raise DatasetError(f"{path}: not found; it is written by 'edgesight train' into the run folder") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}: not a valid split file ({e}); re-run 'edgesight train'") from e


def check_image(path: str) -> Optional[str]:
    """Return why ``path`` cannot be used as a training image, or None if it decodes cleanly.

    Pillow is used to catch truncated files that OpenCV would silently pad with grey, and
    OpenCV must decode the file too, since that is what the input pipeline and runtime use.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"cannot read ({e.strerror})"
    if not data:
        return "empty file (0 bytes)"
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with the train extra
        Image = None
    if Image is not None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except UnidentifiedImageError:
            return "not an image file (unrecognised format)"
        except (OSError, SyntaxError, ValueError) as e:
            return f"corrupt or truncated image ({e})"
        except Image.DecompressionBombError as e:
            return f"image too large ({e})"
    try:
        decode_image(data, "rgb", where=path)
    except ImageReadError:
        return "OpenCV cannot decode it"
    return None


def _class_dirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _from_class_folders(folder: Path, split: str, walk: DatasetWalk) -> List[Path]:
    classes = _class_dirs(folder)
    # A capture folder's frames that no one has labelled yet are not a class.
    for cdir in [c for c in classes if c.name == UNCERTAIN_DIR]:
        classes.remove(cdir)
        walk.skipped.append((str(cdir), "frames the model was unsure of: move them into class folders to train on them"))
    if not classes:
        loose = [p for p in folder.iterdir() if p.is_file() and is_image_path(p)]
        hint = f" (found {len(loose)} loose images)" if loose else ""
        raise DatasetError(
            f"{folder}: no class sub-folders{hint}; put each class's images in its own sub-folder "
            f"({folder}/<class>/*.jpg) or give a CSV manifest of path,label"
        )
    for cdir in classes:
        check_class_name(cdir.name, cdir)
        walk.add(cdir, (cdir, split))
    return classes


def _collect(walk: DatasetWalk, class_dirs: List[Tuple[Path, str]], candidates: list, skipped: list) -> None:
    files: Dict[Tuple[Path, str], List[Path]] = {key: [] for key in class_dirs}
    for path, key in walk.files():
        files[key].append(path)
    skipped.extend(walk.skipped)
    for (cdir, split), paths in files.items():
        if not any(is_image_path(p) for p in paths):
            raise DatasetError(f"{cdir}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)}); add at least 2 or remove the folder")
        for p in paths:
            if is_image_path(p):
                candidates.append((str(p.resolve()), cdir.name, split))
            else:
                skipped.append((str(p), f"not an image file (extension '{p.suffix or 'none'}')"))


def _from_csv(path: Path, candidates: list) -> None:
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the CSV manifest ({e}); give a UTF-8 file of path,label rows") from e
    rows = list(csv.reader(text.splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path", "label"], ["filename", "label"], ["file", "label"], ["image", "label"]):
        rows = rows[1:]
        start = 2
    else:
        start = 1
    for lineno, row in enumerate(rows, start=start):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"{path}:{lineno}: expected 'path,label', got {','.join(row)!r}; every row needs an image path and a label")
        p = Path(row[0].strip())
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise DatasetError(f"{path}:{lineno}: label '{row[1].strip()}' points to {p}, which does not exist; fix the path (relative to {base}) or remove the row")
        split = "all"
        if len(row) >= 3 and row[2].strip():
            split = SPLIT_ALIASES.get(row[2].strip().lower(), "")
            if not split:
                raise DatasetError(f"{path}:{lineno}: unknown split '{row[2].strip()}'; use train, val or test")
        check_class_name(row[1].strip(), f"{path}:{lineno}")
        candidates.append((str(p.resolve()), row[1].strip(), split))
    if not candidates:
        raise DatasetError(f"{path}: the CSV manifest has no rows; add 'path,label' rows")


def scan_dataset(source: Path, workers: Optional[int] = None, progress: bool = True) -> ScannedDataset:
    """Find and validate every image of a dataset source.

    Args:
        source: a folder (class sub-folders, optionally under train/val/test) or a CSV manifest.
        workers: threads used to decode images (default: 2 per core).
        progress: show a progress bar while checking images (on a terminal).

    Returns:
        The usable samples, grouped by given split, and the skipped files with reasons.

    Raises:
        DatasetError: the source is missing or empty, has a single class, a class with fewer
            than 2 usable images, a class name that labels.txt cannot keep (control
            characters), or a CSV row without a file. Symbolic links that leave the dataset or
            lead back into scanned folders are not followed; they are listed in ``skipped``.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder; give a folder of class sub-folders or a CSV manifest")
    candidates: List[Tuple[str, str, str]] = []
    skipped: List[Tuple[str, str]] = []
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DatasetError(f"{source}: not a folder or a .csv manifest; give a folder of class sub-folders or a CSV of path,label")
        layout, root = "csv", source.parent.resolve()
        _from_csv(source, candidates)
    else:
        root = source.resolve()
        subdirs = {p.name.lower(): p for p in _class_dirs(source)} if source.is_dir() else {}
        split_dirs = {SPLIT_ALIASES[n]: p for n, p in subdirs.items() if n in SPLIT_ALIASES}
        walk = DatasetWalk(root)
        if "train" in split_dirs:
            layout = "presplit"
            class_dirs = [(c, name) for name, folder in sorted(split_dirs.items()) for c in _from_class_folders(folder, name, walk)]
        else:
            if not any(source.iterdir()):
                raise DatasetError(f"{source}: the folder is empty; put each class's images in its own sub-folder")
            layout = "folders"
            class_dirs = [(c, "all") for c in _from_class_folders(source, "all", walk)]
        _collect(walk, class_dirs, candidates, skipped)
        if layout == "folders":
            # Images listed in the dataset's own split.json keep their split (see .pins).
            pins = read_pins(root)
            candidates[:] = [(p, lab, pins.get(p, sp)) for p, lab, sp in candidates]

    reasons = _check_all([c[0] for c in candidates], workers, progress)
    given: Dict[str, List[Sample]] = {}
    for (path, label, split), reason in zip(candidates, reasons):
        if reason is None:
            given.setdefault(split, []).append(Sample(path, label))
        else:
            skipped.append((path, reason))

    labels_by_split = {s: {x.label for x in v} for s, v in given.items()}
    all_candidate_labels = sorted({c[1] for c in candidates if c[2] in ("train", "all") or layout == "folders"})
    classes = tuple(all_candidate_labels)
    if len(classes) < 2:
        raise DatasetError(
            f"{source}: only {len(classes)} class found ({', '.join(classes) or 'none'}); "
            "a classifier needs at least 2 classes"
        )
    _check_class_counts(source, layout, candidates, given, classes)
    for split in ("val", "test"):
        extra = labels_by_split.get(split, set()) - set(classes)
        if extra:
            raise DatasetError(f"{source}: the {split} split has classes not in train: {', '.join(sorted(extra))}; add them to train or remove them")
    return ScannedDataset(source=source, root=root, layout=layout, classes=classes, given=given, skipped=skipped)


def unlabelled_images(folder: Path, progress: bool = False) -> List[Sample]:
    """Every usable image under ``folder`` (recursively) as a sample without a label, e.g. for
    int8 calibration, which needs images like the real input but no classes."""
    paths = [str(p.resolve()) for p in walk_files(Path(folder)) if is_image_path(p)]
    reasons = _check_all(paths, None, progress)
    return [Sample(p, "") for p, reason in zip(paths, reasons) if reason is None]


def _check_all(paths: List[str], workers: Optional[int], progress: bool) -> List[Optional[str]]:
    from tqdm import tqdm

    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(check_image, paths, chunksize=64)
        return list(tqdm(it, total=len(paths), desc="checking images", unit="img", disable=None if progress else True, leave=False))


def _check_class_counts(source: Path, layout: str, candidates, given, classes) -> None:
    # A folder's images pinned to val or test by its split.json count as they did before pinning.
    train_like = [s for k, v in given.items() if k in ("train", "all") or layout == "folders" for s in v]
    counts = {c: 0 for c in classes}
    for s in train_like:
        counts[s.label] += 1
    if layout == "presplit":
        # The given val/test images count towards "usable" only for their own split.
        min_needed = 1 if given.get("val") else 2
    else:
        min_needed = 2
    for c in classes:
        if counts[c] < min_needed:
            total = sum(1 for p, lab, sp in candidates if lab == c and sp in ("train", "all"))
            where = f"{source}/train/{c}" if layout == "presplit" else (f"{source}/{c}" if layout == "folders" else f"{source} (label '{c}')")
            unreadable = total - counts[c]
            found = (f"{counts[c]} usable image(s) of {total} ({unreadable} skipped as unreadable)" if unreadable
                     else f"{counts[c]} image(s)")
            raise DatasetError(
                f"{where}: class '{c}' has {found}; "
                f"each class needs at least {min_needed}: add images or remove the class"
            )


def _allocate(n: int, val: float, test: float) -> Tuple[int, int]:
    """How many of ``n`` images of a class go to test and val; at least 1 stays in train."""
    n_test = round(n * test) if test > 0 else 0
    n_val = round(n * val) if val > 0 else 0
    if test > 0 and n >= 2:
        n_test = max(1, n_test)
    if val > 0 and n - n_test >= 2:
        n_val = max(1, n_val)
    n_test = min(n_test, n - 1)
    n_val = min(n_val, n - 1 - n_test)
    return n_val, n_test


def _stratified(samples: List[Sample], classes: Sequence[str], val: float, test: float, seed: int):
    train, vs, ts = [], [], []
    for c in classes:
        items = sorted((s for s in samples if s.label == c), key=lambda s: s.path)
        # A per-class RNG keeps one class's split independent of the others' sizes.
        random.Random(f"{seed}:{c}").shuffle(items)
        n_val, n_test = _allocate(len(items), val, test)
        ts += items[:n_test]
        vs += items[n_test : n_test + n_val]
        train += items[n_test + n_val :]
    return train, vs, ts


def make_split(scanned: ScannedDataset, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42) -> Split:
    """Deterministic stratified split; splits given by the dataset are kept as they are.

    A pre-split dataset without ``val/`` gets its validation set carved from ``train/``
    (stratified); one without ``test/`` has an empty test split.
    """
    for name, v in (("val", val_fraction), ("test", test_fraction)):
        if not 0.0 <= v < 0.9:
            raise DatasetError(f"{name} fraction {v} is out of range; use a value in [0, 0.9)")
    if val_fraction + test_fraction >= 0.95:
        raise DatasetError(f"val + test fractions ({val_fraction} + {test_fraction}) leave nothing to train on; lower them")
    g = scanned.given
    if "all" in g:
        train, val, test = _stratified(g["all"], scanned.classes, val_fraction, test_fraction, seed)
        # Rows of a CSV that named their split keep it.
        val += g.get("val", [])
        test += g.get("test", [])
        train += g.get("train", [])
    else:
        train, val, test = list(g.get("train", [])), list(g.get("val", [])), list(g.get("test", []))
        if not val and val_fraction > 0:
            train, val, _ = _stratified(train, scanned.classes, val_fraction, 0.0, seed)
    return Split(
        root=scanned.root,
        source=str(Path(scanned.source).resolve()),
        layout=scanned.layout,
        classes=scanned.classes,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train=train,
        val=val,
        test=test,
        skipped=list(scanned.skipped),
    )


def write_skipped(path: Path, skipped: Sequence[Tuple[str, str]]) -> None:
    """``skipped.txt``: one ``path<TAB>reason`` line per skipped file."""
    write_text(path, "".join(f"{p}\t{r}\n" for p, r in skipped))


def format_skipped(skipped: Sequence[Tuple[str, str]], limit: int = 20) -> str:
    lines = [f"skipped {len(skipped)} file(s):"]
    lines += [f"  {p}: {r}" for p, r in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see skipped.txt)")
    return "\n".join(lines)
