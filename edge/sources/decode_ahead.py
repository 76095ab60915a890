"""Decoding a finite source ahead of its consumer, on a worker thread.

Video files and image folders are read on demand; wrapped in :class:`DecodeAhead`, their next
frames are decoded while the caller runs inference on the current one. :func:`auto_prefetch`
decides whether that pays for a given number of interpreter threads and cores.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Callable, Optional

import numpy as np

from ..frames import Frame


def auto_prefetch(compute_threads: Optional[int], cores: Optional[int] = None) -> int:
    """Frames to decode ahead for a consumer running ``compute_threads`` interpreter threads.

    With one interpreter thread and a core left over, decoding on a worker thread overlaps with
    inference. With two or more threads the camera loop classifies frames of a file in parallel
    (one interpreter per thread, see :func:`~edgesight.edge.loop.runner.frame_workers`), and a decoder thread
    keeps those workers fed while the loop thread reports results. Only a single core with a
    single thread decodes on the caller's thread. ``None`` threads means the interpreter's
    default of one.
    """
    cores = cores or os.cpu_count() or 1
    threads = max(1, compute_threads or 1)
    return 4 if cores > threads or threads >= 2 else 0


class DecodeAhead:
    """Decodes the next frames of a finite source on a worker thread while the caller runs
    inference on the current one, so decoding and inference overlap instead of adding up.

    Every frame is still delivered, in order (a bounded queue of ``depth`` frames: the decoder
    waits when the consumer is slower). Counters are read through from the wrapped source.
    Once the consumer sets :attr:`prepare` (``image -> model input``), the worker also makes
    each frame's ``pixels``, taking the resize off the inference thread too.

    Args:
        source: a finite source (video file or image folder read every frame).
        depth: frames decoded ahead.
    """

    def __init__(self, source, depth: int = 4) -> None:
        self.source = source
        self.live = False
        self.prepare: Optional[Callable[[np.ndarray], np.ndarray]] = None
        # Two C-level queues instead of one bounded queue.Queue: the frames, and one token per
        # free slot; each hand-over is then a single C call on each side.
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._slots: "queue.SimpleQueue" = queue.SimpleQueue()
        for _ in range(max(1, depth)):
            self._slots.put(None)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._done = False
        self._thread = threading.Thread(target=self._work, name="edgesight-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Wait for a free slot, then queue ``item``; False when closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._slots.get(timeout=0.1)
            except queue.Empty:
                continue
            self._queue.put(item)
            return True
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                prepare = self.prepare
                if frame is not None and prepare is not None:
                    frame = dataclasses.replace(frame, pixels=prepare(frame.image))
                if not self._put(frame) or frame is None:
                    return
        except BaseException as e:  # handed to the consumer's thread by read()
            self._error = e
            self._put(None)

    def read(self) -> Optional[Frame]:
        if self._done:
            return None
        frame = self._queue.get()
        self._slots.put(None)
        if frame is None:
            self._done = True
            if self._error is not None:
                raise self._error
        return frame

    def __getattr__(self, name):
        # captured, dropped, skipped, fps, path...: whatever the wrapped source reports.
        return getattr(self.source, name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
