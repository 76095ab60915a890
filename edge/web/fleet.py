"""The fleet view of ``edgesight fleet watch --http``: a page with the live table of the devices
and ``/fleet.json``, under the rules of :class:`~edgesight.edge.web.server.WebServer` (the Host
allow-list and the token of the run's live view)."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict

from .assets import send_page, send_static
from .server import Request, Route


def fleet_routes(snapshot: Callable[[], Dict[str, Any]]) -> Dict[str, Dict[str, Route]]:
    """The page (``/``), ``/fleet.json`` (``snapshot()``) and the page's files."""

    def page(req: Request) -> None:
        send_page(req, "fleet.html")

    def data(req: Request) -> None:
        req.send(200, "application/json", json.dumps(snapshot()).encode("utf-8"))

    return {"/": {"GET": page}, "/index.html": {"GET": page}, "/fleet.json": {"GET": data},
            "/static/": {"GET": send_static}}
