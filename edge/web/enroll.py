"""``/enroll`` on the live view: enrol a class from the frames on screen, without training.

``POST /enroll?name=NAME`` takes one shot of class NAME: the frame the view shows now (as
captured, without the overlay), or the image in the request body when there is one (the bytes
of a JPEG or PNG file). After ``--enroll-shots`` shots (default 5) the class is enrolled into the
running classifier: from the next frame on, results, top-k, threshold and smoothing include it.
It is saved into the bundle folder when that folder is writable; otherwise into
``--enroll-dir`` (default: the working directory, a service's state directory) as
``<bundle>-enrolled``, a whole bundle to run instead of the read-only one.

The server's rules apply as to every request (Host, token, cross-origin POST refused), and
each POST must carry the header ``X-Edgesight: 1``, which a page of another origin cannot send
(so it cannot enrol through a viewer's browser). On a view served to the network without a
token (``--http-insecure``), ``/enroll`` is off.

Answers (JSON):

* a shot taken: ``200 {"name", "shots": k, "needed": n, "enrolled": false}``;
* the class enrolled: ``200 {"name", "shots": n, "needed": n, "enrolled": true, "saved_to",
  "in_bundle": true|false, "labels": [...], "message"}``;
* ``POST /enroll?name=NAME&reset=1``: the shots taken so far are dropped
  (``{"name", "shots": 0, "needed": n, "enrolled": false}``);
* ``GET /enroll``: ``{"needed": n, "pending": {NAME: k}, "enrolled": [...], "labels": [...]}``;
* errors ``{"error": one line}``: 400 a bad name, 403 the header missing or ``/enroll`` off,
  409 no frame yet, 413 a body over the size limit, 415 a body that is not an image, 500 the
  class could not be saved (the running classifier is unchanged).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import EdgesightError
from ..model.preprocess import ImageReadError, ImageTooLargeError, decode_image
from .server import WRITE_HEADER, HttpError, Request, Routes

log = logging.getLogger("edgesight.enroll")


class LiveEnroller:
    """Collects shots per class name and enrols a class once it has enough.

    Args:
        classifier: the running :class:`~edgesight.edge.classifier.Classifier`.
        shots: shots per class (``--enroll-shots``).
        state_dir: where to save when the bundle folder is read-only (``--enroll-dir``).
        on_change: called with the new labels after each enrolment (the page's label list).
    """

    def __init__(self, classifier: Any, shots: int = 5, state_dir: Optional[Path] = None,
                 on_change: Optional[Any] = None) -> None:
        self.classifier = classifier
        self.shots = shots
        self.state_dir = Path(state_dir) if state_dir else Path.cwd()
        self.on_change = on_change
        # The newest frame as captured; the live view's sink sets it for every frame.
        self.frame: Optional[np.ndarray] = None
        self._pending: Dict[str, List[np.ndarray]] = {}
        self._lock = threading.Lock()

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {"needed": self.shots, "pending": {k: len(v) for k, v in self._pending.items()},
                    "enrolled": list(self.classifier.enrolled), "labels": self.classifier.labels}

    def take(self, name: str, image: Optional[np.ndarray] = None, reset: bool = False) -> Tuple[int, Dict[str, Any]]:
        """One ``POST /enroll``: ``(HTTP status, JSON answer)``."""
        from ..model.enroll import check_name

        try:
            name = check_name(name, self.classifier.info.labels, str(self.classifier.bundle.root))
        except ValueError as e:
            return 400, {"error": str(e)}
        with self._lock:
            if reset:
                self._pending.pop(name, None)
                return 200, {"name": name, "shots": 0, "needed": self.shots, "enrolled": False}
            shot = image if image is not None else self.frame
            if shot is None:
                return 409, {"error": "no frame yet: wait for the camera, or send an image in the request body"}
            shots = self._pending.setdefault(name, [])
            shots.append(np.array(shot, copy=True))
            if len(shots) < self.shots:
                return 200, {"name": name, "shots": len(shots), "needed": self.shots, "enrolled": False}
            frames = self._pending.pop(name)
        try:
            where, in_bundle = self._enrol(name, frames)
        except EdgesightError as e:
            log.error("enrolling '%s' failed: %s", name, e)
            return 500, {"error": str(e)}
        message = (f"'{name}' enrolled and saved in the bundle {where}" if in_bundle else
                   f"'{name}' enrolled; the bundle folder is read-only, so the enrolled bundle was saved to {where}: "
                   "run that bundle to keep the class after a restart")
        log.info("%s", message)
        if self.on_change is not None:
            self.on_change(self.classifier.labels)
        return 200, {"name": name, "shots": len(frames), "needed": self.shots, "enrolled": True, "saved_to": str(where),
                     "in_bundle": in_bundle, "labels": self.classifier.labels, "message": message}

    def _enrol(self, name: str, frames: List[np.ndarray]) -> Tuple[Path, bool]:
        from ..model.enroll_files import writable

        clf = self.classifier
        if writable(clf.bundle.root):
            try:
                return clf.enroll(name, frames), True
            except EdgesightError as e:
                log.warning("cannot save into %s (%s); saving into %s", clf.bundle.root, e, self.state_dir)
        dest = self.state_dir / f"{Path(clf.bundle.root).name}-enrolled"
        return clf.enroll(name, frames, out=dest), False


def enroll_routes(enroller: LiveEnroller, refusal: Optional[str] = None) -> Routes:
    """``GET`` and ``POST /enroll`` on ``enroller``; with ``refusal``, both answer 403 with it."""
    import cv2

    def status(req: Request) -> None:
        if refusal:
            raise HttpError(403, refusal)
        req.send_json(enroller.status())

    def take(req: Request) -> None:
        if refusal:
            raise HttpError(403, refusal)
        if not req.headers.get(WRITE_HEADER):
            raise HttpError(403, f"this request changes the model: send the {WRITE_HEADER}: 1 header")
        image = None
        if req.headers.get("Content-Length", "0").strip() not in ("", "0"):
            clf = enroller.classifier
            try:
                rgb = decode_image(req.body(), "rgb", "the request body", target=clf.info.preprocess.size, max_pixels=clf.max_pixels)
            except ImageReadError as e:
                raise HttpError(413 if isinstance(e, ImageTooLargeError) else 415,
                                f"{e}; send a JPEG or PNG file, or no body to use the frame on screen") from None
            image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        q = req.query
        code, answer = enroller.take(q.get("name", ""), image, reset=q.get("reset", "0") not in ("", "0", "false"))
        req.send_json(answer, code)

    return {"/enroll": {"GET": status, "POST": take}}
