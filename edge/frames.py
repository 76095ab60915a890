"""The data that flows through the camera loop: frames from sources, results to sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np


@dataclass
class Frame:
    """One captured image.

    Attributes:
        image: BGR uint8 ``HxWx3`` (OpenCV's convention; grayscale sources are converted).
        index: sequence number assigned by the source, counting every frame it captured
            (dropped ones included), so gaps show where frames were dropped.
        timestamp: ``time.monotonic()`` at capture, for capture-to-result latency.
        wall_time: ``time.time()`` at capture, for logs and events.
        path: the file an image-folder source read, else None.
        pixels: the model input already made from ``image`` by a source that prepares frames
            on its own thread (see :class:`~edgesight.edge.sources.DecodeAhead`), else None.
    """

    image: np.ndarray
    index: int
    timestamp: float
    wall_time: float
    path: Optional[str] = None
    pixels: Optional[np.ndarray] = None


@dataclass
class Result:
    """The classification of one frame, as sinks receive it.

    Attributes:
        frame_index, timestamp, wall_time: copied from the frame.
        label: the reported label after threshold and smoothing (``unknown`` below threshold).
        score: its probability (smoothed when smoothing is on).
        top_k: ``(label, probability)`` pairs of the raw model output, best first.
        latency_ms: capture to result.
        stages_ms: time per stage (preprocess, invoke, postprocess).
        changed: the reported label differs from the previous frame's.
        path: the source file, for image-folder sources.
        anomaly: the model is an anomaly detector: the label is ``ok`` or ``defect`` and the
            score its anomaly score (1.0 = the threshold), not a probability.
    """

    frame_index: int
    timestamp: float
    wall_time: float
    label: str
    score: float
    top_k: List[Tuple[str, float]]
    latency_ms: float
    stages_ms: Dict[str, float] = field(default_factory=dict)
    changed: bool = False
    path: Optional[str] = None
    anomaly: bool = False

    def to_event(self) -> dict:
        """The JSON object written by the JSONL, HTTP and MQTT sinks."""
        return {
            "time": round(self.wall_time, 6),
            "frame": self.frame_index,
            "label": self.label,
            "score": round(float(self.score), 6),
            "top_k": [{"label": lab, "score": round(float(s), 6)} for lab, s in self.top_k],
            "latency_ms": round(self.latency_ms, 3),
            **({"path": self.path} if self.path else {}),
        }


class FrameSource(Protocol):
    """Where frames come from. ``read()`` returns None at the end of a finite source."""

    live: bool

    def read(self) -> Optional[Frame]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc) -> None: ...
