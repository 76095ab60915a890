"""``POST /classify``: an image in the body (JPEG, PNG, BMP, WebP... the bytes of the file),
the classification as JSON out::

    curl --data-binary @photo.jpg http://127.0.0.1:8080/classify
    {"label": "stop", "score": 0.97, "top_k": [{"label": "stop", "score": 0.97}, ...],
     "width": 640, "height": 480, "latency_ms": 4.1}

The body is capped (the server's ``max_body``) before any of it is read, and decoded with the
package's decoder, which refuses an image whose header declares more pixels than ``max_pixels``
and decodes a large one reduced. Errors are ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional

import cv2
import numpy as np

from ..errors import BundleError
from ..model.preprocess import ImageReadError, ImageTooLargeError, decode_image, frame_to_pixels
from .server import HttpError, Request

ImageClassifier = Callable[[bytes], Dict[str, Any]]


def bytes_classifier(clf: Any, *, top_k: int = 3, threshold: float = 0.0, max_pixels: Optional[int] = None,
                     own_interpreter: bool = False) -> ImageClassifier:
    """A function from encoded image bytes to the JSON result of ``clf`` (a
    :class:`~edgesight.edge.classifier.Classifier`).

    Args:
        top_k, threshold: as for ``edgesight classify``.
        max_pixels: refuse images with more pixels (default: the classifier's).
        own_interpreter: classify on an interpreter of its own, made at the first request, so
            a camera loop running on ``clf.model`` meanwhile is never touched from another
            thread (a LiteRT interpreter serves one thread at a time).

    Raises (from the returned function):
        ImageTooLargeError: above ``max_pixels``.
        ImageReadError: not a decodable image.
        BundleError: (``own_interpreter``) the model cannot have a second interpreter here.
    """
    spec = clf.info.preprocess
    limit = max_pixels or getattr(clf, "max_pixels", None)
    lock = threading.Lock()
    own: Dict[str, Any] = {}

    def classify(data: bytes) -> Dict[str, Any]:
        rgb = decode_image(data, "rgb", "the request body", target=spec.size, max_pixels=limit)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.shape[2] == 3 else rgb
        if own_interpreter:
            pixels = frame_to_pixels(bgr, spec)
            with lock:
                if "model" not in own:
                    own["model"] = clf.model.clone(num_threads=1)
                probs = np.asarray(own["model"].predict(pixels))
            label, score, top, _ = clf.decider(threshold=threshold, k=top_k, n=len(probs))(probs)
            out = {"label": label, "score": round(float(score), 6),
                   "top_k": [{"label": lab, "score": round(float(v), 6)} for lab, v in top]}
        else:
            out = clf(bgr, top_k=top_k, threshold=threshold).to_dict()
        return {**out, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}

    return classify


def classify_route(classify: ImageClassifier) -> Callable[[Request], None]:
    """The ``POST /classify`` handler around ``classify`` (see :func:`bytes_classifier`)."""

    def handle(req: Request) -> None:
        ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
        # curl --data-binary labels the bytes x-www-form-urlencoded; only a multipart form is refused.
        if ctype == "multipart/form-data":
            raise HttpError(415, "send the image file itself as the body (curl --data-binary @photo.jpg), not a form")
        data = req.body()
        if not data:
            raise HttpError(400, "the body is empty: send the bytes of an image file (curl --data-binary @photo.jpg)")
        t0 = time.perf_counter()
        try:
            out = classify(data)
        except ImageTooLargeError as e:
            raise HttpError(413, str(e)) from None
        except ImageReadError as e:
            raise HttpError(415, f"{e}: send a JPEG, PNG, BMP or WebP file") from None
        except BundleError as e:
            raise HttpError(503, f"{e}; classify with edgesight serve BUNDLE instead") from None
        req.send_json({**out, "latency_ms": round((time.perf_counter() - t0) * 1000, 3)})

    return handle
