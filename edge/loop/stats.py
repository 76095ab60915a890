"""Frame-rate, latency and per-stage timing statistics of the camera loop."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Deque, Dict, Optional

import numpy as np


class LoopStats:
    """Running statistics; percentiles over the last ``window`` frames.

    Args:
        window: frames kept for latency percentiles (a bounded memory for days-long runs).
    """

    def __init__(self, window: int = 10000) -> None:
        self.started = time.monotonic()
        self.frames = 0
        self.latency_ms: Deque[float] = deque(maxlen=window)
        self.stage_sum: Dict[str, float] = {}
        self.dropped_source = 0
        self.dropped_sinks = 0
        self.reconnects = 0
        self.skipped = 0
        # The run's drift monitor (edgesight.edge.loop.drift), None when drift is not measured.
        self.drift: Optional[Any] = None
        self._last_report = self.started
        self._frames_at_report = 0
        self.recent_fps = 0.0

    def add(self, latency_ms: float, stages_ms: Dict[str, float]) -> None:
        self.frames += 1
        self.latency_ms.append(latency_ms)
        for k, v in stages_ms.items():
            self.stage_sum[k] = self.stage_sum.get(k, 0.0) + v

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def fps(self) -> float:
        e = self.elapsed
        return self.frames / e if e > 0 else 0.0

    def percentiles(self) -> Dict[str, Optional[float]]:
        if not self.latency_ms:
            return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
        a = np.fromiter(self.latency_ms, dtype=np.float64)
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3), "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}

    def due(self, interval: float) -> bool:
        """True once every ``interval`` seconds; updates the recent frame rate."""
        now = time.monotonic()
        if now - self._last_report < interval:
            return False
        self.recent_fps = (self.frames - self._frames_at_report) / (now - self._last_report)
        self._last_report, self._frames_at_report = now, self.frames
        return True

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "seconds": round(self.elapsed, 3),
            "fps": round(self.fps, 3),
            "dropped": self.dropped_source,
            "dropped_sink_items": self.dropped_sinks,
            "reconnects": self.reconnects,
            "skipped": self.skipped,
            "latency_ms": self.percentiles(),
            "stages_ms": {k: round(v / self.frames, 4) for k, v in self.stage_sum.items()} if self.frames else {},
            "drift": self.drift.to_dict() if self.drift is not None else None,
        }

    def line(self) -> str:
        """The periodic progress line: frames, FPS, drops, latency p50/p95/p99 and the mean time
        of each stage."""
        p = self.percentiles()
        lat = (f"latency p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms" if p["p50"] is not None
               else "latency -")
        stages = ", ".join(f"{k} {v / self.frames:.1f}" for k, v in self.stage_sum.items()) if self.frames else ""
        return (f"{self.frames} frames, {self.recent_fps or self.fps:.1f} FPS, dropped {self.dropped_source}, {lat}"
                + (f" (per frame ms: {stages})" if stages else ""))
