"""Frames saved as a class-folder dataset for review and retraining (``run --capture DIR``).

What the run writes into ``DIR``::

    DIR/<label>/<name>.jpg       a frame whose top-1 label is <label>, confidently
    DIR/_uncertain/<name>.jpg    a frame the model was unsure of: its top-1 score is under
                                 ``below`` (--capture-below), its top-1 leads the top-2 by less
                                 than ``margin`` (--capture-margin), or it was reported
                                 ``unknown`` (under --threshold)
    DIR/captures.jsonl           one JSON object per line, appended per capture

``<label>`` is the folder of the top-1 label (:func:`edgesight.edge.captures.folder_name`: the
label itself unless it is not a safe folder name). ``<name>`` is
``YYYYmmdd-HHMMSS-mmm-<frame index>``, so names sort by time and never clash between folders.
Images are the frames as the camera gave them (no overlay), cut to the run's ``--roi`` window
when it has one (what the model classified, so a retrain learns from what it will see), written
to a temporary file and renamed, so a reader never sees half an image. ``edgesight train DIR``
reads the folder as it is (``_uncertain/`` is left out), ``edgesight datasets merge DIR --into
DATA`` adds it to a dataset.

A capture record of ``captures.jsonl``::

    {"time": 1764500000.123456,          # wall-clock time of the frame (seconds since 1970)
     "frame": 1234,                      # the frame's index in the run
     "model_sha256": "ab12...",          # sha256 of the .tflite that classified it
     "label": "stop",                    # top-1 label of the frame (not smoothed)
     "score": 0.4213,                    # its probability
     "top_k": [["stop", 0.4213], ["yield", 0.3906]],   # best first, --top-k entries
     "source": "rtsp://cam/stream",      # the run's --source (passwords shown as ***)
     "file": "_uncertain/20261130-101500-123-00001234.jpg",   # relative to DIR, / separated
     "reason": "uncertain"}              # uncertain | label | random

The relabel page appends ``{"file": ..., "relabelled": NEW_LABEL, "from": OLD_LABEL, "time": ...}``
when it moves a file into ``DIR/<NEW_LABEL>/``; readers skip records of kinds they do not
know. A record whose file is gone was deleted for the size cap (or by hand).

Sampling, so a still scene does not fill the card with one picture: per label (and apart for
uncertain frames of that label) at most one frame every ``every`` seconds of capture time
(reason ``label`` or ``uncertain``); of the other frames a random share ``random`` (reason
``random``). Files in ``DIR`` count towards ``max_mb`` (a restarted run keeps honouring it); the
oldest are deleted first. A write error (a full card) is logged once and stops the captures;
the loop goes on.
"""

from __future__ import annotations

import json
import logging
import os
import random as _random
import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..captures import CAPTURE_SUFFIX, LOG_FILE, UNCERTAIN_DIR, folder_name, folder_names
from ..errors import EdgesightError
from ..frames import Frame, Result
from ..fsutil import PathLike, inside_root, write_bytes
from ..model.preprocess import crop_roi
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


class CaptureSink(Sink):
    """Saves sampled frames as ``DIR/<label>/*.jpg`` and ``DIR/_uncertain/*.jpg`` with a
    ``captures.jsonl`` record each (the layout and the record are in the module docstring).

    Args:
        folder: the capture folder (created if missing).
        labels: the model's labels, in output order (their folder names are settled once).
        model_sha256: recorded with every capture.
        source: the run's source as shown to people (recorded with every capture).
        below: a top-1 score under this makes a frame uncertain.
        margin: a top-1 lead over the top-2 under this makes a frame uncertain (with a single
            top-k entry the lead is the score itself).
        every: seconds between two captures of the same label (0: every frame).
        random: share of the other frames kept at random.
        max_mb: size cap of the images in MiB; the oldest are deleted beyond it.
        only: capture only frames reported as one of these labels (``unknown`` allowed);
            empty: all.
        quality: JPEG quality.
        seed: seed of the random share (for reproducible runs).
        roi: ``(x, y, w, h)`` window the model classifies (``--roi``): the image saved is that
            window, not the whole frame; None: the whole frame.

    Raises:
        EdgesightError: a value out of range, or a folder that cannot be used (one line
            naming it and the fix).
    """

    needs_raw_frame = True  # saves the frame as the camera saw it, without the overlay

    def __init__(self, folder: PathLike, labels: Sequence[str] = (), *, model_sha256: str = "", source: str = "",
                 below: float = 0.5, margin: float = 0.1, every: float = 5.0, random: float = 0.01,
                 max_mb: float = 512.0, only: Iterable[str] = (), quality: int = 90, seed: Optional[int] = None,
                 roi: Optional[Tuple[int, int, int, int]] = None) -> None:
        for name, value, hi in (("below", below, 1.0), ("margin", margin, 1.0), ("random", random, 1.0), ("every", every, None)):
            if not value >= 0 or (hi is not None and value > hi):
                raise EdgesightError(f"--capture-{name} {value}: must be {'between 0 and 1' if hi else 'at least 0'}")
        if not max_mb > 0:
            raise EdgesightError(f"--capture-max-mb must be positive, got {max_mb}")
        self.root = Path(os.path.abspath(os.fspath(folder)))
        self.model_sha256 = model_sha256
        self.source = source
        self.below, self.margin, self.every, self.random = float(below), float(margin), float(every), float(random)
        self.only = frozenset(only)
        self.cap = int(max_mb * 2**20)
        self.quality = int(quality)
        self.roi = tuple(int(v) for v in roi) if roi else None
        self.saved = 0
        self.deleted = 0
        self.disabled = False
        self._folders = folder_names(labels)
        self._checked: Dict[str, Path] = {}
        self._last: Dict[Tuple[bool, str], float] = {}
        self._rng = _random.Random(seed)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            existing = self._existing()
        except OSError as e:
            raise EdgesightError(f"{self.root}: cannot use it for captures ({e.strerror or e}); choose another --capture folder") from e
        self._files: Deque[Tuple[Path, int]] = deque(existing)
        self._total = sum(size for _, size in self._files)
        self._log_fd: Optional[int] = None

    def _existing(self):
        """``(path, size)`` of the images already in the folder, oldest first."""
        found = []
        for folder in [self.root, *(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))]:
            for p in folder.iterdir():
                if p.suffix == CAPTURE_SUFFIX and not p.name.startswith(".") and p.is_file() and not p.is_symlink():
                    st = p.stat()
                    found.append((st.st_mtime, p.name, p, st.st_size))
        return [(p, size) for _, _, p, size in sorted(found)]

    # What to keep

    def decide(self, result: Result) -> Optional[Tuple[str, bool, str]]:
        """``(top-1 label, uncertain, reason)`` when ``result``'s frame is to be kept, else None."""
        if self.only and result.label not in self.only:
            return None
        top = result.top_k or [(result.label, result.score)]
        label, score = top[0][0], float(top[0][1])
        second = float(top[1][1]) if len(top) > 1 else 0.0
        uncertain = score < self.below or score - second < self.margin or result.label == "unknown"
        key = (uncertain, label)
        last = self._last.get(key)
        if last is None or result.timestamp - last >= self.every:
            self._last[key] = result.timestamp
            return label, uncertain, "uncertain" if uncertain else "label"
        if self.random > 0 and self._rng.random() < self.random:
            return label, uncertain, "random"
        return None

    def _folder(self, label: str, uncertain: bool) -> Tuple[str, Path]:
        name = UNCERTAIN_DIR if uncertain else self._folders.get(label) or folder_name(label)
        path = self._checked.get(name)
        if path is None:
            # A folder that is a link leading out of DIR (made by hand, or a crafted card) is refused.
            path = inside_root(self.root, self.root / name)
            path.mkdir(exist_ok=True)
            self._checked[name] = path
        return name, path

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        if self.disabled:
            return
        chosen = self.decide(result)
        if chosen is None:
            return
        label, uncertain, reason = chosen
        image = crop_roi(frame.image, self.roi) if self.roi else frame.image
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            logger.error("capture: could not encode frame %d as JPEG", result.frame_index)
            return
        data = buf.tobytes()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.wall_time))
        ms = int(result.wall_time * 1000) % 1000
        try:
            sub, folder = self._folder(label, uncertain)
            path = folder / f"{stamp}-{ms:03d}-{result.frame_index:08d}{CAPTURE_SUFFIX}"
            n = 2
            while path.exists():
                path = folder / f"{stamp}-{ms:03d}-{result.frame_index:08d}-{n}{CAPTURE_SUFFIX}"
                n += 1
            write_bytes(path, data)
            self._append({
                "time": round(result.wall_time, 6),
                "frame": result.frame_index,
                "model_sha256": self.model_sha256,
                "label": label,
                "score": round(float(result.top_k[0][1]) if result.top_k else float(result.score), 6),
                "top_k": [[lab, round(float(s), 6)] for lab, s in result.top_k],
                "source": self.source,
                "file": f"{sub}/{path.name}",
                "reason": reason,
            })
        except (OSError, ValueError) as e:
            self.disabled = True
            logger.error("capture: cannot write in %s (%s); no more frames are captured", self.root,
                         getattr(e, "strerror", None) or e)
            return
        self._files.append((path, len(data)))
        self._total += len(data)
        self.saved += 1
        self._enforce_cap()

    def _append(self, record: dict) -> None:
        if self._log_fd is None:
            self._log_fd = os.open(self.root / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # One write of one whole line in append mode: the relabel page may append to the same
        # file meanwhile, and neither cuts into the other's line.
        os.write(self._log_fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def _enforce_cap(self) -> None:
        while self._total > self.cap and len(self._files) > 1:
            old, size = self._files.popleft()
            try:
                old.unlink()
            except FileNotFoundError:
                pass  # moved by the relabel page or removed by hand: the cap is what matters
            self._total -= size
            self.deleted += 1

    def close(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self.saved:
            logger.info("capture: saved %d frames to %s (%d oldest deleted for the %d MiB cap)", self.saved, self.root,
                        self.deleted, self.cap // 2**20)
