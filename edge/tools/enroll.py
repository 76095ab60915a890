"""Embeddings and enrolment on a loaded :class:`~edgesight.edge.classifier.Classifier`: what
``Classifier.embed``/``enroll``/``unenroll``, ``edgesight embed``, ``edgesight enroll`` and the
live view's ``/enroll`` do (the maths are in :mod:`edgesight.edge.model.enroll`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BundleError, ConfigError
from ..model.enroll import EnrolledSet, check_name, enrol, normalise
from ..model.enroll_files import embedding_output, read_enrolled, read_reference, save_enrolment
from ..model.preprocess import ImageReadError

log = logging.getLogger("edgesight.enroll")


def load_enrolment(clf: Any, verify: bool) -> None:
    """Read the bundle's reference embeddings and enrolled classes into ``clf``'s interpreter."""
    bundle = clf.bundle
    if clf.model.embedding_tensor is None or bundle.json_path is None:
        return
    reference = read_reference(bundle.root, bundle.info, verify)
    if reference is None:
        return
    if reference.size != clf.model.embedding_tensor.shape[-1]:
        raise BundleError(f"{bundle.json_path}: the reference embeddings have {reference.size} values but the embedding output of "
                          f"{bundle.model_path.name} has {clf.model.embedding_tensor.shape[-1]}; copy the whole bundle again")
    clf._reference = reference
    clf.model.enrolled = read_enrolled(bundle.root, bundle.info, reference, verify)


def _need_embedding(clf: Any) -> None:
    if clf.model.embedding_tensor is None:
        raise BundleError(f"{clf.bundle.root}: the model has no embedding output, so it cannot embed or enrol; "
                          "convert it again with 'edgesight convert --embedding'")


def embed_pixels(clf: Any, pixels: np.ndarray) -> np.ndarray:
    """The L2-normalised embedding of one preprocessed image."""
    model = clf._open()
    _need_embedding(clf)
    with clf._lock:
        model.set_pixels(pixels)
        model.invoke()
        return normalise(model.output_embedding())


def embed_images(clf: Any, images: Sequence[Any]) -> np.ndarray:
    """``n x D`` normalised embeddings of images (paths or BGR frames), all read first.

    Raises:
        ImageReadError: the first image that cannot be read (nothing is embedded).
    """
    _need_embedding(clf)
    pixels = [clf._pixels(image) for image in images]
    return np.stack([embed_pixels(clf, p) for p in pixels]) if pixels else np.zeros((0, clf.model.embedding_tensor.shape[-1]), np.float32)


def embed_files(clf: Any, paths: Sequence[Path], progress: Optional[Callable[[int], None]] = None
                ) -> Tuple[np.ndarray, List[str], List[Tuple[str, str]]]:
    """Embeddings of image files, skipping unreadable ones: ``(N x D, paths, skipped)``."""
    _need_embedding(clf)
    rows, done, skipped = [], [], []
    for path in paths:
        try:
            rows.append(embed_pixels(clf, clf._pixels(path)))
            done.append(str(path))
        except ImageReadError as e:
            skipped.append((str(path), str(e).split(": ", 1)[-1]))
        if progress:
            progress(1)
    size = clf.model.embedding_tensor.shape[-1]
    return (np.stack(rows) if rows else np.zeros((0, size), np.float32)), done, skipped


def _enrolled(clf: Any) -> EnrolledSet:
    _need_embedding(clf)
    if clf._reference is None:
        raise BundleError(f"{clf.bundle.root}: has no reference embeddings to calibrate enrolled classes against "
                          "(reference_embeddings.npy, written by convert); convert the model again with edgesight")
    return clf.model.enrolled or EnrolledSet((), clf._reference.centre())


def _save(clf: Any, new: EnrolledSet, out: Optional[Path]) -> Path:
    bundle = clf.bundle
    if bundle.json_path is None:
        raise BundleError(f"{bundle.model_path}: a bare .tflite has no model.json to record enrolled classes in; use the bundle folder")
    return save_enrolment(bundle.root, bundle.info, new, out)


def enroll(clf: Any, name: str, images: Sequence[Any], out: Optional[Path] = None, save: bool = True) -> Optional[Path]:
    """Enrol ``name`` from ``images`` into ``clf`` and, with ``save``, into the bundle (or ``out``).

    Every image is read and the bundle written before the running classifier changes; any
    error leaves both as they were.
    """
    current = _enrolled(clf)
    try:
        name = check_name(name, clf.bundle.info.labels, str(clf.bundle.root))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not len(images):
        raise ConfigError(f"no images to enrol '{name}' from; give one or more photos of it (five or more work best)")
    shots = embed_images(clf, images)
    cls = enrol(name, shots, clf._reference, current.centre)
    new = current.with_class(cls)
    dest = _save(clf, new, out) if save else None
    with clf._lock:
        clf.model.enrolled = new
    _reload_info(clf, dest, out)
    log.info("enrolled '%s' from %d image%s (logit %.2f * cosine %+.2f)%s", name, cls.shots, "" if cls.shots == 1 else "s",
             cls.scale, cls.bias, f" into {dest}" if dest else "")
    return dest


def unenroll(clf: Any, name: str, out: Optional[Path] = None, save: bool = True) -> Optional[Path]:
    """Remove the enrolled class ``name`` from ``clf`` and, with ``save``, from the bundle."""
    current = _enrolled(clf)
    if current.get(name) is None:
        listed = ", ".join(current.names) or "none"
        hint = "a trained class cannot be removed" if name in clf.bundle.info.labels else f"enrolled classes: {listed}"
        raise ConfigError(f"'{name}' is not an enrolled class of {clf.bundle.root} ({hint})")
    new = current.without(name)
    dest = _save(clf, new, out) if save else None
    with clf._lock:
        clf.model.enrolled = new
    _reload_info(clf, dest, out)
    return dest


def _reload_info(clf: Any, dest: Optional[Path], out: Optional[Path]) -> None:
    """After an in-place save, the loaded bundle's model.json is the new one."""
    if dest is not None and out is None:
        from dataclasses import replace

        from ..model.spec import read_model_info

        clf.bundle = replace(clf.bundle, info=read_model_info(dest))


def describe(clf: Any) -> List[dict]:
    """The enrolled classes of ``clf``: label, shots, scale and bias."""
    e = clf.model.enrolled
    return [{"label": c.name, "shots": c.shots, "scale": round(c.scale, 4), "bias": round(c.bias, 4)} for c in (e.classes if e else ())]


def has_embedding(info: Any) -> bool:
    return embedding_output(info) is not None
