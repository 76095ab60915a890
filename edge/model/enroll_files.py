"""Enrolled classes in a model bundle: plain ``.npy`` files and their description in model.json.

::

    bundle/
      model.tflite  model.json  labels.txt ...
      reference_embeddings.npy      written by convert: a few embeddings per trained class
      enrolled/<name>.npy           one prototype per enrolled class (float32, D values)

model.json records each file with its sha256, checked on load as the model's is::

    "outputs": {"scores": {"position": 0, "name": ..., ...},
                "embedding": {"position": 1, "name": ..., "size": D, "dtype": ..., "scale": ..., "zero_point": ...}},
    "enrolment": {"reference": "reference_embeddings.npy", "reference_sha256": ...,
                  "classes": [{"label": NAME, "file": "enrolled/NAME.npy", "sha256": ..., "shots": 5,
                               "scale": a, "bias": b}]}

``labels.txt`` keeps the trained classes only (the model's own output, which other runtimes read
from its metadata); enrolled names come after them, in ``enrolment.classes`` order. Every file is
read with ``allow_pickle=False``. A bundle is changed by writing a complete copy beside it and
swapping the two in one step, so a failed enrolment leaves it as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import BundleError
from ..fsutil import replace_dir, write_bytes
from .enroll import EnrolledClass, EnrolledSet, Reference
from .spec import ModelInfo, write_model_info

REFERENCE_FILE = "reference_embeddings.npy"
ENROLLED_DIR = "enrolled"
ENROLMENT_KEY = "enrolment"
OUTPUTS_KEY = "outputs"


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` file of ``array`` (deterministic: the same array gives the same bytes)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def reference_array(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The structured array of ``reference_embeddings.npy``: ``label`` (int16) and
    ``embedding`` (float16, L2-normalised) per image."""
    emb = np.asarray(embeddings, np.float32)
    out = np.zeros(len(emb), dtype=[("label", "<i2"), ("embedding", "<f2", (emb.shape[1],))])
    out["label"] = np.asarray(labels, np.int16)
    out["embedding"] = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return out


def embedding_output(info: ModelInfo) -> Optional[Dict[str, Any]]:
    """model.json's description of the embedding output, or None when the model has none."""
    outputs = info.extra.get(OUTPUTS_KEY)
    entry = outputs.get("embedding") if isinstance(outputs, dict) else None
    return entry if isinstance(entry, dict) else None


def inside_bundle(root: Path, name: Any, json_path: Path, key: str) -> Path:
    parts = PurePosixPath(str(name)).parts if isinstance(name, str) else ()
    if not parts or str(name).startswith("/") or ".." in parts:
        raise BundleError(f"{json_path}: {key}: {name!r} is not a file inside the bundle; copy the whole bundle again")
    return root / str(name)


def read_npy(path: Path, sha: Any, verify: bool, json_path: Path, key: str) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read it ({e.strerror}); copy the whole bundle again, or enrol the class again") from e
    if verify and hashlib.sha256(data).hexdigest() != sha:
        raise BundleError(f"{path}: sha256 does not match {key} in {json_path} (the file was modified or damaged); "
                          "copy the bundle again, or pass --no-verify to run it unverified")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise BundleError(f"{path}: not a plain .npy array ({str(e).splitlines()[0]}); copy the bundle again") from e


def read_reference(root: Path, info: ModelInfo, verify: bool = True) -> Optional[Reference]:
    """The bundle's reference embeddings, or None when it has none.

    Raises:
        BundleError: the file is missing, altered or of the wrong shape.
    """
    section = info.extra.get(ENROLMENT_KEY)
    emb = embedding_output(info)
    if not isinstance(section, dict) or not section.get("reference") or emb is None:
        return None
    json_path = Path(root) / "model.json"
    path = inside_bundle(Path(root), section["reference"], json_path, "enrolment.reference")
    arr = read_npy(path, section.get("reference_sha256"), verify, json_path, "enrolment.reference_sha256")
    names = arr.dtype.names or ()
    if "label" not in names or "embedding" not in names or arr.ndim != 1 or arr["embedding"].shape[1:] != (int(emb["size"]),):
        raise BundleError(f"{path}: not the reference embeddings of this model (expected {emb['size']} values per image); "
                          "convert the model again")
    labels = arr["label"].astype(np.int64)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= info.num_classes:
        raise BundleError(f"{path}: its labels are not classes of this model; convert the model again")
    return Reference(arr["embedding"].astype(np.float32), labels)


def read_enrolled(root: Path, info: ModelInfo, reference: Reference, verify: bool = True) -> EnrolledSet:
    """The enrolled classes model.json lists (an empty set when there are none).

    Raises:
        BundleError: a file is missing, altered or of the wrong shape, or an entry is invalid.
    """
    root = Path(root)
    json_path = root / "model.json"
    section = info.extra.get(ENROLMENT_KEY) or {}
    classes: List[EnrolledClass] = []
    for i, entry in enumerate(section.get("classes") or []):
        key = f"enrolment.classes[{i}]"
        try:
            name, scale, bias, shots = str(entry["label"]), float(entry["scale"]), float(entry["bias"]), int(entry["shots"])
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{json_path}: {key} is incomplete ({e}); enrol the class again") from e
        path = inside_bundle(root, entry.get("file"), json_path, f"{key}.file")
        proto = read_npy(path, entry.get("sha256"), verify, json_path, f"{key}.sha256")
        if proto.shape != (reference.size,) or proto.dtype.kind != "f":
            raise BundleError(f"{path}: expected {reference.size} float values, found {proto.dtype} {proto.shape}; enrol the class again")
        classes.append(EnrolledClass(name, proto.astype(np.float32), scale, bias, shots))
    return EnrolledSet(tuple(classes), reference.centre())


def file_name(name: str, taken: set) -> str:
    """A file name for class ``name`` under ``enrolled/``: readable, unique, safe anywhere."""
    base = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_")[:40] or "class"
    if base in taken:
        base = f"{base}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
    taken.add(base)
    return f"{ENROLLED_DIR}/{base}.npy"


def _check_out(out: Path, source: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another --out")
    if any(out.iterdir()) and not (out / "model.json").is_file():
        raise BundleError(f"{out}: exists and is not a model bundle (no model.json); choose another --out, nothing was written")
    if out.resolve() in source.resolve().parents:
        raise BundleError(f"{out}: holds the bundle {source}; choose another --out")


def save_enrolment(root: Path, info: ModelInfo, enrolled: EnrolledSet, out: Optional[Path] = None) -> Path:
    """Write the bundle at ``root`` with ``enrolled`` as its enrolled classes, to ``out`` (a
    new or earlier bundle folder) or in place.

    The bundle is copied to ``<dest>.partial``, changed there and swapped with ``dest`` in one
    step; on any error ``dest`` is left as it was.

    Returns:
        The bundle folder written.

    Raises:
        BundleError: ``out`` is not usable, or the folder cannot be written (the message says
            to choose a writable ``--out``).
    """
    root = Path(os.path.realpath(root))
    dest = Path(os.path.realpath(out)) if out is not None else root
    if dest != root:
        _check_out(dest, root)
    staging = dest.with_name(dest.name + ".partial")
    section = dict(info.extra.get(ENROLMENT_KEY) or {})
    try:
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(root, staging, ignore=shutil.ignore_patterns(ENROLLED_DIR))
        taken: set = set()
        entries = []
        for cls in enrolled.classes:
            rel = file_name(cls.name, taken)
            data = npy_bytes(cls.prototype.astype(np.float32))
            (staging / ENROLLED_DIR).mkdir(exist_ok=True)
            write_bytes(staging / rel, data)
            entries.append({"label": cls.name, "file": rel, "sha256": hashlib.sha256(data).hexdigest(),
                            "shots": cls.shots, "scale": round(cls.scale, 6), "bias": round(cls.bias, 6)})
        section["classes"] = entries
        write_model_info(staging, info.with_extra(**{ENROLMENT_KEY: section}))
        replace_dir(staging, dest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"{dest}: cannot write the bundle there ({e.strerror or e}); "
                          "give --out NEW_BUNDLE in a folder you can write to") from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def writable(root: Path) -> bool:
    """Whether the bundle folder can be replaced in place (it and its parent are writable)."""
    root = Path(os.path.realpath(root))
    return os.access(root, os.W_OK) and os.access(root.parent, os.W_OK)


def enrolled_names(info: ModelInfo) -> List[str]:
    """The labels of the enrolled classes model.json lists."""
    section = info.extra.get(ENROLMENT_KEY)
    classes = section.get("classes") if isinstance(section, dict) else None
    return [str(c["label"]) for c in classes or [] if isinstance(c, dict) and "label" in c]


def read_enrolment_files(root: Path, info: ModelInfo) -> Dict[str, bytes]:
    """The enrolment files of a bundle (relative name -> bytes), each checked against its sha256.

    Raises:
        BundleError: a file is missing, outside the bundle or altered.
    """
    section = info.extra.get(ENROLMENT_KEY)
    if not isinstance(section, dict):
        return {}
    root = Path(root)
    json_path = root / "model.json"
    wanted = []
    if section.get("reference"):
        wanted.append((section["reference"], section.get("reference_sha256"), "enrolment.reference"))
    for i, c in enumerate(section.get("classes") or []):
        if isinstance(c, dict):
            wanted.append((c.get("file"), c.get("sha256"), f"enrolment.classes[{i}]"))
    out: Dict[str, bytes] = {}
    for name, sha, key in wanted:
        path = inside_bundle(root, name, json_path, f"{key}.file" if "classes" in key else key)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BundleError(f"{path}: cannot read it ({e.strerror}); copy the whole bundle again") from e
        if hashlib.sha256(data).hexdigest() != sha:
            raise BundleError(f"{path}: sha256 does not match {key} in {json_path} (the file was modified or damaged); "
                              "copy the bundle again, or enrol the class again")
        out[str(name)] = data
    return out
