"""The live view's moving parts: the shared latest frame (MJPEG), the recent results behind the
page's charts, and the routes that serve them."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..errors import EdgesightError
from .server import HttpError, Request

logger = logging.getLogger("edgesight.web")

BOUNDARY = "frame"


class FrameHub:
    """The latest annotated frame, shared by every stream client.

    The loop only stores a reference (cheap); the first client that needs a new frame encodes
    it to JPEG and the others reuse those bytes, so each frame is encoded at most once and
    never when nobody is watching. Each client waits on the condition for a frame newer than
    the one it sent, so a slow client skips frames instead of queueing them; a client that
    went away is noticed (and its thread ends) when the next frame fails to send.
    """

    def __init__(self, jpeg_quality: int, max_clients: int) -> None:
        self._cond = threading.Condition()
        self._image: Optional[np.ndarray] = None
        self._seq = 0
        self._closed = False
        self._encode_lock = threading.Lock()
        self._jpeg = b""
        self._jpeg_seq = 0
        self._quality = jpeg_quality
        self._max_clients = max_clients
        self.clients = 0

    def put(self, image: np.ndarray) -> None:
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def add_client(self) -> bool:
        with self._cond:
            if self._closed or self.clients >= self._max_clients:
                return False
            self.clients += 1
            return True

    def remove_client(self) -> None:
        with self._cond:
            self.clients -= 1

    def next_jpeg(self, after_seq: int) -> Optional[Tuple[int, bytes]]:
        """Block until a frame newer than ``after_seq``; None once the hub is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._seq > after_seq)
            if self._closed:
                return None
            seq, image = self._seq, self._image
        with self._encode_lock:
            if self._jpeg_seq < seq:
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
                if not ok:
                    raise EdgesightError(f"OpenCV could not JPEG-encode a {image.shape} frame for the stream")
                self._jpeg, self._jpeg_seq = buf.tobytes(), seq
            return self._jpeg_seq, self._jpeg


def send_stream(req: Request, hub: FrameHub) -> None:
    """``GET /stream.mjpg``: every new frame as one part of a ``multipart/x-mixed-replace`` body."""
    if not hub.add_client():
        req.send(503, "text/plain; charset=utf-8", b"too many stream clients; try again later\n")
        return
    try:
        req.send_response(200)
        req.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        req.send_common_headers()
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        seq = 0
        while True:
            item = hub.next_jpeg(seq)
            if item is None:
                return
            seq, jpeg = item
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            req.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
    finally:
        hub.remove_client()


class History:
    """The recent results the page draws (score over time, label timeline), thinned to one per
    ``spacing`` seconds except where the label changes, so ``size`` entries span minutes even
    at hundreds of frames per second.

    Each entry is ``{"seq", "time", "frame", "label", "score", "latency_ms"}``; ``seq`` counts
    entries, so a page asks only for those after the last one it has.
    """

    def __init__(self, size: int = 1200, spacing: float = 0.1) -> None:
        self._items: Deque[Dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._seq = 0
        self._last_time = float("-inf")
        self._last_label: Optional[str] = None
        self.spacing = spacing

    def add(self, event: Dict[str, Any]) -> None:
        """Record a result event (``Result.to_event()``)."""
        t, label = float(event["time"]), event["label"]
        with self._lock:
            if label == self._last_label and t - self._last_time < self.spacing:
                return
            self._seq += 1
            self._last_time, self._last_label = t, label
            self._items.append({"seq": self._seq, "time": event["time"], "frame": event["frame"], "label": label,
                                "score": event["score"], "latency_ms": event.get("latency_ms")})

    def after(self, seq: int) -> List[Dict[str, Any]]:
        """Entries newer than ``seq``, oldest first."""
        with self._lock:
            return [item for item in self._items if item["seq"] > seq]


def history_route(history: History, labels: Callable[[], List[str]]) -> Callable[[Request], None]:
    """``GET /history?after=SEQ``: ``{"labels": [...], "items": [...]}``."""

    def handle(req: Request) -> None:
        try:
            after = int(req.query.get("after", "0"))
        except ValueError:
            raise HttpError(400, "after must be a whole number (the last seq the page has)") from None
        req.send_json({"labels": labels(), "items": history.after(after)})

    return handle
