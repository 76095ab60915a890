"""``edgesight datasets merge``: reviewed captures added to a class-folder dataset.

A capture folder (``run --capture DIR``, see :mod:`edgesight.edge.sinks.capture`) holds frames
in the folder of their label, whether the model put them there or someone moved them there on
the relabel page. Merging copies the frames of every class folder into the dataset:

* a frame whose bytes (sha256) are already in the dataset, or earlier in the captures, is a
  duplicate and is left out, so merging twice adds nothing;
* ``_uncertain/`` is left out: those frames await a label;
* a class the dataset lacks is refused unless ``new_classes`` is given;
* no added image ever lands in the test split, and the images already there keep their split:
  in a pre-split dataset the frames go under ``train/<class>/`` (a share under ``val/<class>/``
  when the dataset has a validation folder); in a folder of class folders they go into the
  class folders and ``DATA/split.json`` records them as ``train`` or ``val`` beside every
  earlier image with its split (see :mod:`.pins`), which ``edgesight train DATA`` keeps.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgesight.edge.captures import UNCERTAIN_DIR, read_records
from edgesight.edge.errors import DatasetError
from edgesight.edge.fsutil import atomic_path, inside_root
from edgesight.edge.model.preprocess import is_image_path

from .data import SPLIT_ALIASES, Sample, Split, check_image, make_split, scan_dataset
from .pins import PIN_FILE, PIN_FORMAT, PIN_SPLITS
from .walk import check_class_name, walk_files

DEFAULT_VAL, DEFAULT_TEST, DEFAULT_SEED = 0.1, 0.1, 42  # what `edgesight train DATA` splits by


@dataclass
class MergeReport:
    """What a merge added (or, with ``dry_run``, would add).

    Attributes:
        added: class -> images added to training.
        added_val: class -> images added to validation.
        duplicates: class -> frames left out because their bytes are already in the dataset.
        uncertain: predicted label -> frames of ``_uncertain/`` left out.
        unreadable: ``(path, reason)`` of frames that do not decode.
        new_classes: classes the dataset did not have.
        copies: ``(capture, destination, split)`` of every image added.
        split_note: how the dataset's split was kept (one line), or "".
    """

    added: Dict[str, int] = field(default_factory=dict)
    added_val: Dict[str, int] = field(default_factory=dict)
    duplicates: Dict[str, int] = field(default_factory=dict)
    uncertain: Dict[str, int] = field(default_factory=dict)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    new_classes: List[str] = field(default_factory=list)
    copies: List[Tuple[str, str, str]] = field(default_factory=list)
    split_note: str = ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_path(p))


def _subdirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout(data: Path) -> Tuple[str, Path, Optional[Path]]:
    """``(layout, folder of the training class folders, folder of the validation ones or None)``."""
    if not data.exists():
        raise DatasetError(f"{data}: no such folder; give the dataset folder to add the captures to with --into")
    if data.is_file():
        raise DatasetError(f"{data}: merge adds to a folder of class sub-folders, not to a file; give the dataset folder")
    splits = {SPLIT_ALIASES[p.name.lower()]: p for p in _subdirs(data) if p.name.lower() in SPLIT_ALIASES}
    if "train" in splits:
        return "presplit", splits["train"], splits.get("val")
    return "folders", data, None


def _uncertain_labels(captures: Path) -> Dict[str, str]:
    """``_uncertain/<name>`` -> the label the model predicted for it, from captures.jsonl."""
    return {str(r["file"]): str(r.get("label", "?")) for r in read_records(captures)
            if isinstance(r.get("file"), str) and "reason" in r}


def merge_captures(captures: Path, data: Path, *, val_share: float = 0.1, new_classes: bool = False,
                   run: Optional[Path] = None, dry_run: bool = False) -> MergeReport:
    """Add the frames of ``captures``' class folders to the dataset ``data``.

    Args:
        captures: a capture folder (class folders, ``_uncertain/``, ``captures.jsonl``).
        data: a folder of class folders, optionally under ``train/ val/ test/``.
        val_share: share of each class's added frames recorded as validation images.
        new_classes: add classes ``data`` lacks instead of refusing them.
        run: a run trained on ``data`` whose ``split.json`` the dataset's split starts from
            when ``data`` has no ``split.json`` yet (default: the split ``edgesight train
            DATA`` makes with its defaults).
        dry_run: report what would be added; change nothing.

    Raises:
        DatasetError: a missing folder, a class ``data`` lacks, a run of another dataset
            (one line naming it and the fix).
    """
    captures, data = Path(captures), Path(data)
    if not captures.is_dir():
        raise DatasetError(f"{captures}: no such folder; give the folder that 'edgesight run --capture' wrote")
    if not 0.0 <= val_share <= 0.9:
        raise DatasetError(f"--val-share {val_share}: use a share between 0 and 0.9")
    layout, train_dir, val_dir = _layout(data)
    known = {p.name for p in _subdirs(train_dir) if p.name != UNCERTAIN_DIR}
    report = MergeReport()

    predicted = _uncertain_labels(captures)
    frames: Dict[str, List[Path]] = {}
    for folder in _subdirs(captures):
        images = _images(folder)
        if folder.name == UNCERTAIN_DIR:
            for p in images:
                label = predicted.get(f"{UNCERTAIN_DIR}/{p.name}", "?")
                report.uncertain[label] = report.uncertain.get(label, 0) + 1
        elif images:
            check_class_name(folder.name, folder)
            frames[folder.name] = images
    strangers = sorted(set(frames) - known)
    if strangers and not new_classes:
        raise DatasetError(
            f"{captures}: {', '.join(repr(c) for c in strangers)} {'is not a class' if len(strangers) == 1 else 'are not classes'} "
            f"of {data} ({', '.join(sorted(known)) or 'none'}); relabel those captures into the dataset's classes, "
            "or pass --new-classes to add them")
    report.new_classes = strangers

    seen = {_sha256(p) for p in walk_files(data) if is_image_path(p)}
    planned: Dict[str, List[Tuple[str, Path]]] = {}
    for label, images in sorted(frames.items()):
        for p in images:
            digest = _sha256(p)
            if digest in seen:
                report.duplicates[label] = report.duplicates.get(label, 0) + 1
                continue
            reason = check_image(str(p))
            if reason is not None:
                report.unreadable.append((str(p), reason))
                continue
            seen.add(digest)
            planned.setdefault(label, []).append((digest, p))

    # Which added frames are validation images: a share of each class, chosen by content so a
    # rerun chooses the same ones.
    use_val = val_share > 0 and (layout == "folders" or val_dir is not None)
    adds: List[Tuple[Path, Path, str, str]] = []  # (capture, destination, split, label)
    taken: set = set()
    for label, items in planned.items():
        items.sort()
        n_val = round(len(items) * val_share) if use_val else 0
        for i, (_, p) in enumerate(items):
            split = "val" if i < n_val else "train"
            base = (val_dir if split == "val" and layout == "presplit" else train_dir) / label
            dest = _free_name(base, p.name, taken)
            adds.append((p, dest, split, label))
            bucket = report.added_val if split == "val" else report.added
            bucket[label] = bucket.get(label, 0) + 1
    report.copies = [(str(p), str(d), s) for p, d, s, _ in adds]

    if layout == "folders" and adds:
        base_split, report.split_note = _base_split(data, run, dry_run, bool(known))
        if not dry_run:
            _write_pins(data, base_split, [(d, s, label) for _, d, s, label in adds])
    elif val_dir is None and planned:
        report.split_note = f"{data} has no val/ folder: training carves validation images from train/ as before"
    if not dry_run:
        for src, dest, _, _ in adds:
            inside_root(data, dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
    return report


def _free_name(folder: Path, name: str, taken: set) -> Path:
    """``folder/name``, or ``folder/<stem>-2<suffix>``... when that exists or is planned."""
    dest, n = folder / name, 2
    while dest.exists() or dest in taken:
        dest = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    taken.add(dest)
    return dest


Base = Optional[Tuple[Dict[str, List[Sample]], int, float, float]]


def _base_split(data: Path, run: Optional[Path], dry_run: bool, has_images: bool) -> Tuple[Base, str]:
    """The split of the images already in a folder of class folders, to keep: from
    ``data/split.json``, else from ``run``'s split.json, else the default split of ``train``,
    as ``((samples by split, seed, val fraction, test fraction), note)``; ``(None, note)`` when
    ``data/split.json`` exists (it is extended as it is)."""
    pin = data / PIN_FILE
    verb = "would record" if dry_run else "recorded"
    if pin.is_file():
        return None, f"kept the split recorded in {pin}; {verb} the added images there as train/val"
    if not has_images:
        empty: Dict[str, List[Sample]] = {name: [] for name in PIN_SPLITS}
        return (empty, DEFAULT_SEED, DEFAULT_VAL, DEFAULT_TEST), f"{verb} the added images as train/val in {pin}"
    if run is not None:
        sp = Split.load(Path(run) / "split.json")
        why = f"as {run} split them"
        if Path(sp.source).resolve() != data.resolve():
            moved = _moved_split(sp, data)
            if moved is None:
                raise DatasetError(f"{run}/split.json: that run was trained on {sp.source}, not {data}; "
                                   "give a run trained on this dataset, or leave out --run")
            sp, why = moved, f"as {run} split them in {sp.source}, of which {data} is a copy"
    else:
        sp = make_split(scan_dataset(data, progress=False), DEFAULT_VAL, DEFAULT_TEST, DEFAULT_SEED)
        why = (f"as 'edgesight train' splits them by default, seed {DEFAULT_SEED}; "
               "--run RUN keeps the split of a run trained with other options")
    samples = {name: sp.samples(name) for name in PIN_SPLITS}
    return (samples, sp.seed, sp.val_fraction, sp.test_fraction), (f"{verb} the split of the images already in {data} ({why}) "
                                                                    f"and the added ones as train/val in {pin}")


def _moved_split(sp: Split, data: Path) -> Optional[Split]:
    """``sp`` with its images found under ``data`` instead of ``sp.root`` (the dataset copied or
    moved since the run: split.json records paths relative to its root), or None when one of
    them is not there at the same relative path."""
    root = data.resolve()

    def moved(samples: List[Sample]) -> Optional[List[Sample]]:
        out = []
        for s in samples:
            try:
                rel = Path(s.path).relative_to(sp.root)
            except ValueError:
                return None
            if not (root / rel).is_file():
                return None
            out.append(Sample(str(root / rel), s.label))
        return out

    parts = {name: moved(sp.samples(name)) for name in PIN_SPLITS}
    if any(v is None for v in parts.values()) or not any(parts.values()):
        return None
    return Split(root=root, source=str(root), layout=sp.layout, classes=sp.classes, seed=sp.seed,
                 val_fraction=sp.val_fraction, test_fraction=sp.test_fraction, **parts)


def _write_pins(data: Path, known: Base, added: List[Tuple[Path, str, str]]) -> None:
    """Write ``data/split.json``: the earlier images with their split and ``added`` as train/val."""
    root = data.resolve()
    pin = data / PIN_FILE
    if known is None:
        d = json.loads(pin.read_text(encoding="utf-8"))
        if d.get("format") != PIN_FORMAT:
            raise DatasetError(f"{pin}: not an edgesight split file; delete it or move it away, then merge again")
        base = {name: [Sample(str(p if Path(p).is_absolute() else root / p), lab) for p, lab in d.get(name, [])] for name in PIN_SPLITS}
        seed, val_f, test_f = d.get("seed", DEFAULT_SEED), d.get("val_fraction", DEFAULT_VAL), d.get("test_fraction", DEFAULT_TEST)
    else:
        base, seed, val_f, test_f = known
    for dest, split, label in added:
        base[split].append(Sample(str(dest.resolve()), label))
    classes = tuple(sorted({s.label for v in base.values() for s in v}))
    Split(root=root, source=str(root), layout="folders", classes=classes, seed=int(seed), val_fraction=float(val_f),
          test_fraction=float(test_f), train=base["train"], val=base["val"], test=base["test"]).save(pin)


def format_merge(report: MergeReport, captures: Path, data: Path, dry_run: bool = False) -> str:
    """The per-class table and summary lines that ``datasets merge`` prints."""
    classes = sorted(set(report.added) | set(report.added_val) | set(report.duplicates) | set(report.uncertain))
    width = max([len("class"), *(len(c) for c in classes)])
    lines = [f"{'class':<{width}}  {'added':>6} {'(val)':>6} {'dupes':>6} {'uncertain':>9}"]
    for c in classes:
        n_val = report.added_val.get(c, 0)
        lines.append(f"{c:<{width}}  {report.added.get(c, 0) + n_val:>6} {n_val:>6} {report.duplicates.get(c, 0):>6} "
                     f"{report.uncertain.get(c, 0):>9}")
    total = sum(report.added.values()) + sum(report.added_val.values())
    lines.append(f"{'total':<{width}}  {total:>6} {sum(report.added_val.values()):>6} {sum(report.duplicates.values()):>6} "
                 f"{sum(report.uncertain.values()):>9}")
    if report.uncertain:
        lines.append(f"uncertain frames (counted by predicted label) stay out until relabelled into a class folder of {captures}")
    if report.new_classes:
        lines.append(f"new classes: {', '.join(report.new_classes)}")
    for path, reason in report.unreadable:
        lines.append(f"skipped {path}: {reason}")
    if report.split_note:
        lines.append(report.split_note)
    lines.append(f"{'would add' if dry_run else 'added'} {total} images to {data}" + (" (dry run: nothing changed)" if dry_run else ""))
    return "\n".join(lines)
