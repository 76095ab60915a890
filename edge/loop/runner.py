"""The real-time loop: source -> preprocess -> invoke -> postprocess -> sinks.

Live sources: one frame at a time on the calling thread, the interpreter using all its threads
on the newest frame. Files and folders: with two or more threads, consecutive frames on
single-threaded interpreters of their own, reported in order; with one thread and a core to
spare, the interpreter on a thread of its own, classifying the next frame while the calling
thread reports the last. Capture runs on the source's thread and each slow sink on its own, so
neither stalls inference. SIGINT and SIGTERM finish the current frame, flush the sinks and
return the statistics.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Optional, Sequence


from ..frames import Frame, FrameSource, Result
from ..model.interpreter import TFLiteClassifier
from ..model.anomaly import AnomalyDecider, heatmap_overlay
from ..model.postprocess import Decider
from ..model.preprocess import frame_to_pixels
from ..sinks.base import Sink
from ..sources import DecodeAhead
from ..model.spec import ModelInfo
from .config import RunConfig
from .drift import drift_monitor
from .stats import LoopStats

log = logging.getLogger("edgesight.run")


def frame_workers(model: TFLiteClassifier, source: FrameSource, requested: int = 0) -> int:
    """How many frames to classify at once.

    A video file or image folder read every frame wants throughput: ``N`` single-threaded
    interpreters on ``N`` consecutive frames use ``N`` cores with no synchronisation inside an
    inference, where one interpreter with ``N`` threads waits for its slowest thread at every
    layer. A camera (or ``--realtime`` playback) wants the newest frame classified as soon as
    possible, so it keeps one interpreter using all its threads on one frame. An accelerator
    delegate (the Edge TPU) is one device: one frame at a time.
    """
    if requested:
        return max(1, requested)
    if model.has_delegates or getattr(source, "live", False) or getattr(source, "realtime", False):
        return 1
    return model.cpu_threads


@dataclass
class StopFlag:
    """Set by a signal or a sink (a display's q key); checked between frames."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class signals_stop:
    """Context manager: SIGINT/SIGTERM set the stop flag instead of killing the process; a
    second SIGINT raises KeyboardInterrupt as usual."""

    def __init__(self, flag: StopFlag) -> None:
        self.flag = flag
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.flag.set(signal.Signals(signum).name)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self.flag

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_loop(
    model: TFLiteClassifier,
    info: ModelInfo,
    source: FrameSource,
    sinks: Sequence[Sink],
    cfg: RunConfig,
    stop: Optional[StopFlag] = None,
    on_stats: Optional[Callable[[LoopStats], None]] = None,
    printer: Callable[[str], None] = print,
    on_result: Optional[Callable[[Result, LoopStats], None]] = None,
    stats: Optional[LoopStats] = None,
) -> LoopStats:
    """Classify frames from ``source`` until it ends, a limit is reached, or ``stop`` is set.

    Frames of a file or folder are classified several at once when the model has two or more
    threads (see :func:`frame_workers`); results always reach the sinks in frame order. On a
    stop, frames already being classified are finished and reported. For a file or folder read
    frame by frame, queued sinks (:class:`~edgesight.edge.sinks.AsyncSink`) are set ``lossless``: every
    result is written; for a camera a slow sink drops its oldest waiting results instead.

    Returns:
        The loop statistics (also handed to ``on_stats`` every ``stats_interval``; ``on_result``
        sees every result, e.g. to feed a watchdog).
    """
    from ..sinks.overlay import draw_overlay

    stop = stop or StopFlag()
    workers = frame_workers(model, source, cfg.frame_workers)
    # A file or folder read frame by frame is a record: every result reaches every output, and
    # a slow output slows the run down. A camera drops the oldest waiting results instead.
    every_result = not (getattr(source, "live", False) or getattr(source, "realtime", False))
    if workers > 1:
        # Interpreters for frame-parallel work are made before the clock starts.
        worker_models = [model.clone(num_threads=1) for _ in range(workers)]
    elif every_result and not cfg.frame_workers and (os.cpu_count() or 1) > model.cpu_threads:
        # A core to spare: the interpreter runs on a thread of its own and classifies the next
        # frame while this thread reports the last one.
        worker_models = [model]
    else:
        worker_models = []
    stats = stats if stats is not None else LoopStats()
    drift = stats.drift = drift_monitor(info, cfg)
    # Classes enrolled from a few images score after the trained ones, and may be enrolled while
    # the loop runs (the live view's /enroll): the labels follow the scores.
    anomaly = getattr(model, "detector", None) is not None
    decider: Any = (AnomalyDecider(cfg.anomaly_threshold, cfg.smooth, cfg.hysteresis) if anomaly else
                    Decider([*info.labels, *model.enrolled_names], cfg.threshold, cfg.top_k, cfg.smooth, cfg.hysteresis))
    draw_heat = anomaly and cfg.heatmap
    spec = info.preprocess
    roi = cfg.roi_box
    annotate = any(s.needs_annotated for s in sinks)
    for sink in sinks:
        sink.lossless = every_result
    if isinstance(getattr(source, "wrapped", source), DecodeAhead):  # resize on the decoder's thread, next to decoding
        source.prepare = lambda image: frame_to_pixels(image, spec, roi)
    # Draw on the frame itself unless a sink wants the frame as captured.
    copy_frame = any(s.needs_raw_frame for s in sinks)

    def classify(clf: TFLiteClassifier, frame: Frame):
        t0 = time.monotonic()
        pixels = frame.pixels if frame.pixels is not None else frame_to_pixels(frame.image, spec, roi)
        t1 = time.monotonic()
        clf.set_pixels(pixels)
        clf.invoke()
        t2 = time.monotonic()
        probs = clf.output_probabilities()
        inputs = drift.input_stats(pixels) if drift is not None else None  # on the worker thread, in parallel
        return probs, t1 - t0, t2 - t1, time.monotonic() - t2, inputs, getattr(clf, "last_map", None)

    def report(frame: Frame, probs, pre_s: float, invoke_s: float, post_s: float, inputs=None, heat=None) -> bool:
        """Decide, hand the result to the sinks, count it; False when the loop must end."""
        t = time.monotonic()
        if not anomaly and (len(probs) != len(decider.labels) or (len(probs) > len(info.labels) and tuple(decider.labels[len(info.labels):]) != model.enrolled_names)):
            decider.labels = [*info.labels, *model.enrolled_names]
            if len(probs) != len(decider.labels):  # the set changed while this frame was classified
                probs = probs[: len(info.labels)] / max(float(probs[: len(info.labels)].sum()), 1e-12)
                decider.labels = list(info.labels)
        label, score, top, changed = decider(probs)
        t3 = time.monotonic()
        result = Result(
            frame_index=frame.index,
            timestamp=frame.timestamp,
            wall_time=frame.wall_time,
            label=label,
            score=score,
            top_k=top,
            latency_ms=(t3 - frame.timestamp) * 1000.0,
            stages_ms={"preprocess": pre_s * 1000.0, "invoke": invoke_s * 1000.0, "postprocess": (post_s + t3 - t) * 1000.0},
            changed=changed,
            path=frame.path,
            anomaly=anomaly,
        )
        if annotate and draw_heat and heat is not None:
            image = frame.image.copy() if copy_frame else frame.image
            annotated = draw_overlay(heatmap_overlay(image, heat, roi or (0, 0, image.shape[1], image.shape[0])), result,
                                     fps=stats.recent_fps or None, roi=roi, copy=False)
        else:
            annotated = draw_overlay(frame.image, result, fps=stats.recent_fps or None, roi=roi, copy=copy_frame) if annotate else None
        for sink in sinks:
            sink.write(frame, result, annotated)
            if sink.quit_requested:
                stop.set("quit key")
        stats.add(result.latency_ms, result.stages_ms)
        if on_result:
            on_result(result, stats)
        if drift is not None and drift.add(probs, inputs, frame.index) and on_stats:
            on_stats(stats)  # an alert raised or cleared reaches /status, MQTT and the status file at once
        stats.dropped_source = int(getattr(source, "dropped", 0))
        stats.reconnects = int(getattr(source, "reconnects", 0))
        stats.skipped = int(getattr(source, "skipped", 0))
        if cfg.stats_interval and stats.due(cfg.stats_interval):
            stats.dropped_sinks = sum(s.dropped for s in sinks)
            printer(stats.line())
            if on_stats:
                on_stats(stats)
        if cfg.max_frames and stats.frames >= cfg.max_frames:
            return False
        if cfg.duration and stats.elapsed >= cfg.duration:
            return False
        return True

    def read() -> Optional[Frame]:
        while not stop.is_set():
            frame = source.read()
            if frame is not None or not getattr(source, "live", False):
                return frame
            # a live source timed out waiting (e.g. reconnecting): keep going
        return None

    if not worker_models:
        while True:
            frame = read()
            if frame is None or not report(frame, *classify(model, frame)):
                break
    else:
        _run_frame_parallel(worker_models, read, classify, report, cfg.max_frames)
    stats.dropped_source = int(getattr(source, "dropped", 0))
    stats.skipped = int(getattr(source, "skipped", 0))  # files skipped after the last result count too
    stats.dropped_sinks = sum(s.dropped for s in sinks)
    return stats


def _run_frame_parallel(worker_models: Sequence[TFLiteClassifier], read, classify, report, max_frames: int) -> None:
    """Classify consecutive frames at once, one interpreter per worker thread; report in order.

    Frame ``i`` goes to worker ``i % N`` and its result comes back on that worker's own queue,
    so the order needs no bookkeeping and each hand-over is one C-level queue operation.
    """
    workers = len(worker_models)
    inboxes: list = [queue.SimpleQueue() for _ in range(workers)]
    outboxes: list = [queue.SimpleQueue() for _ in range(workers)]

    def work(clf: TFLiteClassifier, inbox: "queue.SimpleQueue", outbox: "queue.SimpleQueue") -> None:
        while True:
            frame = inbox.get()
            if frame is None:
                return
            try:
                outbox.put((True, classify(clf, frame)))
            except BaseException as e:  # noqa: BLE001 - raised again on the loop's thread
                outbox.put((False, e))

    threads = [
        threading.Thread(target=work, args=(m, i, o), name=f"edgesight-infer-{k}", daemon=True)
        for k, (m, i, o) in enumerate(zip(worker_models, inboxes, outboxes))
    ]
    for t in threads:
        t.start()
    pending: Deque[Frame] = deque()
    submitted = reported = 0
    ended = False
    try:
        while True:
            # One frame more than workers in flight: a worker never waits for the next frame.
            while not ended and len(pending) <= workers and not (max_frames and submitted >= max_frames):
                frame = read()
                if frame is None:
                    ended = True
                    break
                inboxes[submitted % workers].put(frame)
                pending.append(frame)
                submitted += 1
            if not pending:
                break
            frame = pending.popleft()
            ok, value = outboxes[reported % workers].get()
            reported += 1
            if not ok:
                raise value
            if not report(frame, *value):
                break
    finally:
        # Frames already handed over are finished (their results are not reported).
        for inbox in inboxes:
            inbox.put(None)
        for t in threads:
            t.join()
