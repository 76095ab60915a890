"""Frames with chosen labels saved as JPEG files for a person to review, under a size cap."""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Deque, Iterable, Optional, Tuple

import cv2
import numpy as np

from ..errors import EdgesightError
from ..frames import Frame, Result
from ..fsutil import PathLike, write_bytes
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


class ReviewSink(Sink):
    """Saves the frames whose label is one of ``labels`` as JPEG files for a person to review
    (the rejects of an inspection line), deleting the oldest beyond ``max_mb``.

    Files are named ``YYYYmmdd-HHMMSS-<frame>-<label>.jpg`` so they sort by time; files already
    in the folder count towards the cap, so a restarted service keeps honouring it. A write
    error (a full disk) is logged once and disables the sink; the loop goes on.

    Args:
        folder: where the frames go (created if missing).
        labels: reported labels whose frames are kept (``unknown`` included if listed).
        max_mb: size cap of the folder's JPEG files, in MiB.
        quality: JPEG quality.
    """

    needs_raw_frame = True  # saves the frame as the camera saw it, without the overlay

    def __init__(self, folder: PathLike, labels: Iterable[str], max_mb: float = 512, quality: int = 90) -> None:
        self.folder = Path(folder)
        self.labels = frozenset(labels)
        if not self.labels:
            raise EdgesightError("--review-dir needs at least one --review-label")
        if max_mb <= 0:
            raise EdgesightError(f"--review-max-mb must be positive, got {max_mb}")
        self.cap = int(max_mb * 2**20)
        self.quality = int(quality)
        self.saved = 0
        self.deleted = 0
        self.disabled = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            existing = sorted(p for p in self.folder.iterdir() if p.suffix == ".jpg" and p.is_file())
        except OSError as e:
            raise EdgesightError(f"{self.folder}: cannot use it for review frames ({e.strerror}); choose another --review-dir") from e
        self._files: Deque[Tuple[Path, int]] = deque((p, p.stat().st_size) for p in existing)
        self._total = sum(size for _, size in self._files)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        if self.disabled or result.label not in self.labels:
            return
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            logger.error("review: could not encode frame %d as JPEG", result.frame_index)
            return
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.wall_time))
        safe_label = "".join(c if c.isalnum() or c in "-_" else "_" for c in result.label)
        path = self.folder / f"{stamp}-{result.frame_index:08d}-{safe_label}.jpg"
        data = buf.tobytes()
        try:
            write_bytes(path, data)
        except OSError as e:
            self.disabled = True
            logger.error("review: cannot write %s (%s); no more review frames are saved", path, e.strerror or e)
            return
        self._files.append((path, len(data)))
        self._total += len(data)
        self.saved += 1
        while self._total > self.cap and len(self._files) > 1:
            old, size = self._files.popleft()
            try:
                old.unlink()
            except FileNotFoundError:
                pass  # someone already removed it while reviewing: the cap is what matters
            self._total -= size
            self.deleted += 1

    def close(self) -> None:
        if self.saved:
            logger.info("review: saved %d frames to %s (%d oldest deleted for the %d MiB cap)", self.saved, self.folder, self.deleted, self.cap // 2**20)
