"""The relabel page and the capture images: ``/review`` (the page), ``/review/items`` (what is in
the capture folder), ``POST /review/move`` (relabel one image), ``/captures/recent`` (the newest,
for the live page) and ``/capture?file=...`` (an image, ``&thumb=1`` for a small one)."""

from __future__ import annotations

import cv2

from ..model.preprocess import ImageReadError, ImageTooLargeError, decode_image
from .assets import send_page
from .relabel import CaptureFolder, RelabelError
from .server import HttpError, Request, Routes

THUMB_WIDTH = 320
THUMB_MAX_PIXELS = 50_000_000
_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def review_routes(folder: CaptureFolder) -> Routes:
    """The routes of the relabel page and the capture images, on ``folder``."""

    def page(req: Request) -> None:
        send_page(req, "review.html")

    def items(req: Request) -> None:
        req.send_json({"labels": folder.labels, "folders": folder.folders, "items": folder.items()})

    def move(req: Request) -> None:
        req.require_write_intent()
        body = req.json_body()
        try:
            record = folder.relabel(body.get("file"), body.get("label"))
        except RelabelError as e:
            raise HttpError(e.status, str(e)) from None
        req.send_json(record)

    def recent(req: Request) -> None:
        try:
            limit = min(100, max(1, int(req.query.get("limit", "8"))))
        except ValueError:
            raise HttpError(400, "limit must be a whole number") from None
        req.send_json({"items": folder.recent(limit)})

    def image(req: Request) -> None:
        try:
            path = folder.resolve(req.query.get("file"))
        except RelabelError as e:
            raise HttpError(e.status, str(e)) from None
        data = path.read_bytes()
        if req.query.get("thumb"):
            data = thumbnail(data, str(path))
            ctype = "image/jpeg"
        else:
            ctype = _IMAGE_TYPES[path.suffix.lower()]
        # A capture's name never comes back with other pixels: the browser may keep it.
        req.send(200, ctype, data, cache=True)

    return {"/review": {"GET": page}, "/review/items": {"GET": items}, "/review/move": {"POST": move},
            "/captures/recent": {"GET": recent}, "/capture": {"GET": image}}


def thumbnail(data: bytes, where: str) -> bytes:
    """``data`` (an encoded image) as a JPEG at most :data:`THUMB_WIDTH` pixels wide (a large
    one is decoded reduced, never above the pixel limit).

    Raises:
        HttpError: 415 for bytes that are not a decodable image, 413 above the pixel limit.
    """
    try:
        rgb = decode_image(data, "rgb", where, target=(THUMB_WIDTH // 2, THUMB_WIDTH // 2), max_pixels=THUMB_MAX_PIXELS)
    except ImageReadError as e:
        raise HttpError(413 if isinstance(e, ImageTooLargeError) else 415, str(e)) from None
    h, w = rgb.shape[:2]
    if w > THUMB_WIDTH:
        rgb = cv2.resize(rgb, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise HttpError(500, f"{where}: could not encode a thumbnail")
    return buf.tobytes()

