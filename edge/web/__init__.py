"""The web side of the device runtime: one small threaded server (:mod:`.server`: host
allow-list, token, cross-origin refusal, thread cap) and what it serves: the live view of
``run --http`` (:mod:`.live`), the relabel page of a capture folder (:mod:`.review`,
:mod:`.relabel`), ``POST /classify`` (:mod:`.classify`), assembled in :mod:`.app`. The pages are
static files in ``static/`` with no external assets, so they work on a device with no internet.
"""

from .app import inference_routes, live_routes, review_app_routes
from .classify import bytes_classifier
from .relabel import CaptureFolder, RelabelError
from .server import WebServer

__all__ = ["WebServer", "CaptureFolder", "RelabelError", "bytes_classifier", "live_routes", "review_app_routes",
           "inference_routes"]
