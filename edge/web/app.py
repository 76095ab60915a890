"""The three sites built on :class:`~edgesight.edge.web.server.WebServer`, as route tables:

- the live view of ``run --http``: the page, ``/status``, ``/stream.mjpg``, ``/history``,
  ``POST /classify`` and, with ``--capture``, the capture images and the relabel page;
- the relabel page of ``edgesight review CAPTURES``;
- the inference server of ``edgesight serve BUNDLE``: ``POST /classify`` and ``/status``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .assets import send_page, send_static
from .classify import ImageClassifier, classify_route
from .live import FrameHub, History, history_route, send_stream
from .relabel import CaptureFolder
from .review import review_routes
from .server import HttpError, Request, Route

_STATIC = {"/static/": {"GET": send_static}}


def _no_captures(req: Request) -> None:
    raise HttpError(404, "no capture folder: start the run with --capture DIR to see and relabel captures")


def _no_enroll(req: Request) -> None:
    raise HttpError(404, "enrolment is off: the model has no embedding output (convert it again with edgesight), "
                         "or --enroll-shots is 0")


def live_routes(*, status: Callable[[], str], hub: FrameHub, history: History, labels: Callable[[], List[str]],
                classify: Optional[ImageClassifier] = None, captures: Optional[CaptureFolder] = None,
                enroll: Optional[Dict[str, Dict[str, Route]]] = None) -> Dict[str, Dict[str, Route]]:
    """The live view's routes; ``status`` gives the ``/status`` body; ``enroll`` the ``/enroll``
    routes (:func:`edgesight.edge.web.enroll.enroll_routes`)."""

    def page(req: Request) -> None:
        send_page(req, "live.html")

    def status_route(req: Request) -> None:
        req.send(200, "application/json", status().encode("utf-8"))

    def config(req: Request) -> None:
        req.send_json({"captures": captures is not None, "classify": classify is not None, "enroll": enroll is not None,
                       "labels": labels()})

    routes: Dict[str, Dict[str, Route]] = {
        "/": {"GET": page}, "/index.html": {"GET": page}, **_STATIC,
        "/status": {"GET": status_route}, "/stream.mjpg": {"GET": lambda req: send_stream(req, hub)},
        "/history": {"GET": history_route(history, labels)}, "/config": {"GET": config},
    }
    if classify is not None:
        routes["/classify"] = {"POST": classify_route(classify)}
    routes.update(enroll or {"/enroll": {"GET": _no_enroll, "POST": _no_enroll}})
    if captures is not None:
        routes.update(review_routes(captures))
    else:
        for path in ("/review", "/review/items", "/captures/recent", "/capture"):
            routes[path] = {"GET": _no_captures}
    return routes


def review_app_routes(captures: CaptureFolder) -> Dict[str, Dict[str, Route]]:
    """The relabel page on its own (``edgesight review``): ``/`` leads to ``/review``."""

    def home(req: Request) -> None:
        req.send(303, "text/plain; charset=utf-8", b"see /review\n", headers=[("Location", "/review" + req.token_query)])

    def config(req: Request) -> None:
        req.send_json({"live": False, "captures": True, "classify": False, "labels": captures.labels})

    return {"/": {"GET": home}, **_STATIC, "/config": {"GET": config}, **review_routes(captures)}


class InferenceStats:
    """Counts of an inference server, for its ``/status``."""

    def __init__(self, model: Dict[str, Any]) -> None:
        self.model = model
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests = 0

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    def status_json(self) -> str:
        return json.dumps({"model": self.model, "classified": self.requests, "uptime": round(time.time() - self.started, 3)})


def inference_routes(classify: ImageClassifier, stats: InferenceStats) -> Dict[str, Dict[str, Route]]:
    """``edgesight serve``: ``POST /classify``, ``GET /status`` and a page to try an image."""
    handle = classify_route(classify)

    def counted(req: Request) -> None:
        handle(req)
        stats.count()

    def page(req: Request) -> None:
        send_page(req, "serve.html")

    def status(req: Request) -> None:
        req.send(200, "application/json", stats.status_json().encode("utf-8"))

    return {"/": {"GET": page}, **_STATIC, "/classify": {"POST": counted}, "/status": {"GET": status}}
