"""The live view of a run: a page for an operator, an MJPEG stream, ``/status`` JSON, the recent
results, ``POST /classify`` and, with a capture folder, its images and the relabel page.

The web server, its request rules and the pages are in :mod:`edgesight.edge.web`; this sink
feeds them the loop's frames, results and statistics.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from ..frames import Frame, Result
from ..fsutil import PathLike
from ..urls import is_loopback
from ..web.app import live_routes
from ..web.live import FrameHub, History
from ..web.relabel import CaptureFolder
from ..web.server import WebServer
from ._common import annotated_or_draw
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


class HttpSink(Sink):
    """A small web server: ``/`` a live page, ``/stream.mjpg`` MJPEG, ``/status`` JSON,
    ``/history`` (recent results), ``POST /classify``, and with a capture folder ``/review``.

    It serves from daemon threads, one per client, so it never blocks the loop; ``write`` only
    stores the latest frame and event. Bound to 127.0.0.1 unless told otherwise: binding to
    ``0.0.0.0`` exposes the camera to the whole network, which should be a deliberate choice.

    Attributes:
        hub: the shared latest frame (``hub.clients`` counts connected stream viewers).
        history: the recent results the page draws.
        captures: the capture folder shown and relabelled, or None.
    """

    needs_annotated = True
    enroller: Any = None

    @property
    def needs_raw_frame(self) -> bool:
        # /enroll takes the frame as captured, not with the overlay drawn on it.
        return self.enroller is not None

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, jpeg_quality: int = 80, max_clients: int = 8,
                 allow_hosts: Sequence[str] = (), token: Optional[str] = None, insecure: bool = False,
                 max_threads: Optional[int] = None, labels: Sequence[str] = (),
                 classify: Optional[Callable[[bytes], Dict[str, Any]]] = None,
                 captures: Optional[PathLike] = None, max_body: int = 10 * 2**20, enroll: Any = None) -> None:
        """Start serving in a background thread.

        Only requests whose ``Host`` header names the bound address, ``localhost``, a loopback
        address or one of ``allow_hosts`` are answered (when bound to every interface, any IP
        address is accepted too): a web page cannot reach the view through a DNS name of its own.

        Args:
            host: the address to listen on.
            port: the TCP port; 0 picks a free one (see :attr:`address`).
            jpeg_quality: JPEG quality of the stream, 1-100.
            max_clients: concurrent stream viewers allowed (each holds a thread and an encode);
                more get 503.
            allow_hosts: further host names the view may be reached by.
            token: required on every request, as ``?token=`` or ``Authorization: Bearer``.
            insecure: serve a non-loopback address without a token (refused otherwise).
            max_threads: requests served at once (default ``max_clients + 8``); more get 503.
            labels: the model's labels (the page's colours follow their order; a capture is
                relabelled to one of them).
            classify: encoded image bytes -> JSON result, behind ``POST /classify``
                (:func:`edgesight.edge.web.classify.bytes_classifier`); None: no such endpoint.
            captures: the ``--capture`` folder: the page shows its newest images, ``/review``
                relabels them.
            max_body: the largest ``POST`` body accepted, in bytes (an image for ``/classify``).
            enroll: a :class:`~edgesight.edge.web.enroll.LiveEnroller` behind ``/enroll`` (enrol
                a class from the frames on screen; off on a network address without a token).

        Raises:
            ConfigError: jpeg_quality, max_clients or max_threads out of range, or a
                non-loopback address without a token and without ``insecure``.
            EdgesightError: the address cannot be bound (in use, not permitted, not local).
        """
        if not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1-100, got {jpeg_quality}")
        if max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {max_clients}")
        max_threads = max_clients + 8 if max_threads is None else max_threads
        if max_threads <= max_clients:
            raise ConfigError(f"max_threads must exceed max_clients ({max_clients}), got {max_threads}")
        self.token = token or None
        self.labels = list(labels)
        self.hub = FrameHub(jpeg_quality, max_clients)
        self.history = History()
        self.captures = None if captures is None else CaptureFolder(captures, self.labels, must_exist=False)
        self._lock = threading.Lock()
        self._event: Optional[dict] = None
        self._stats: Dict[str, Any] = {}
        self._stats_event: Optional[dict] = None
        self._drift: Optional[dict] = None
        self._snapshot = False
        self.enroller = enroll
        enroll_api = None
        if enroll is not None:
            from ..web.enroll import enroll_routes

            refusal = None if token or is_loopback(host) else \
                "enrolment is off on a view served to the network without a token; give --http-token"
            enroll_api = enroll_routes(enroll, refusal)
        routes = live_routes(status=self.status_json, hub=self.hub, history=self.history, labels=self._labels,
                             classify=classify, captures=self.captures, enroll=enroll_api)
        self._web = WebServer(host, port, routes, allow_hosts=allow_hosts, token=token, insecure=insecure,
                              max_threads=max_threads, max_body=max_body)
        self._server = self._web.httpd
        self._closed = False
        logger.info("serving the live view at %s (%s)", self.url,
                    "protected by a token" if self.token else
                    "NOT protected: anyone who can reach this address sees the camera; give --http-token"
                    if not is_loopback(self.address[0]) else "not protected by a token, reachable from this machine only")

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this view (see :meth:`__init__`)."""
        return self._web.host_allowed(header)

    def _labels(self) -> List[str]:
        return self.labels

    @property
    def address(self) -> Tuple[str, int]:
        """The ``(host, port)`` actually bound."""
        return self._web.address

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8080/``."""
        return self._web.url

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Publish the frame to stream viewers and the event to ``/status``.

        The sink keeps a reference to ``annotated`` until the next frame (the loop's overlay is
        a fresh copy per frame), so it must not be modified in place afterwards.
        """
        event = result.to_event()
        with self._lock:
            self._event = event
        self.history.add(event)
        if self.enroller is not None:
            self.enroller.frame = frame.image
        self.hub.put(annotated_or_draw(frame, result, annotated))

    def update_stats(self, stats: Dict[str, Any]) -> None:
        """Replace the snapshot shown by ``/status``: the statistics (fps, dropped frames,
        uptime...) and, under ``"result"``, the event of the last result they count.

        From the first call that gives one, ``/status`` shows that result with those statistics, taken at
        one moment, rather than the newest frame's result with older counts.

        Raises:
            TypeError: a value is not JSON-serialisable (raised here, not later in a request).
        """
        stats = dict(stats)
        snapshot = "result" in stats  # statistics given without their result keep the latest one
        result = stats.pop("result", None)
        drift = stats.pop("drift", None)
        json.dumps([stats, result, drift])
        with self._lock:
            self._stats = stats
            self._snapshot = snapshot
            self._stats_event = result
            self._drift = drift

    def status_json(self) -> str:
        """The ``/status`` body: ``{"result": event or null, "stats": {...}, "latest": event or
        null, "clients": n, "drift": {...} or null}``. ``result`` is the one the statistics end on
        once there are statistics (one snapshot), the latest before; ``latest`` is the newest frame's, which the
        page shows so its label follows every frame. ``drift`` is the drift object of the same
        snapshot (see :mod:`edgesight.edge.loop.drift`; null when the model has no baseline)."""
        with self._lock:
            event = self._stats_event if self._snapshot else self._event
            return json.dumps({"result": event, "stats": self._stats, "latest": self._event, "clients": self.hub.clients,
                               "drift": self._drift})

    def close(self) -> None:
        """Stop serving: end every stream, stop the server thread, release the port."""
        if self._closed:
            return
        self._closed = True
        self.hub.close()
        self._web.close()
