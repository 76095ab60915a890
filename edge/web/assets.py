"""The pages' files (HTML, JavaScript, CSS) shipped in the package: no CDN, no external asset,
so the pages work on a device with no internet."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Tuple

from .server import HttpError, Request

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml"}
QUERY_MARK = "{{query}}"


@lru_cache(maxsize=None)
def _read(name: str) -> bytes:
    if "/" in name or name.startswith(".") or not any(name.endswith(s) for s in _TYPES):
        raise FileNotFoundError(name)
    return (resources.files(__package__) / "static" / name).read_bytes()


def asset(name: str) -> Tuple[str, bytes]:
    """``(content type, bytes)`` of ``static/<name>``.

    Raises:
        FileNotFoundError: no such file among the pages' files.
    """
    return _TYPES["." + name.rpartition(".")[2]], _read(name)


def send_page(req: Request, name: str) -> None:
    """An HTML page, its links given the request's ``?token=`` (the page's scripts read it from
    the address for their own requests)."""
    html = _read(name).decode("utf-8").replace(QUERY_MARK, req.token_query)
    req.send(200, "text/html; charset=utf-8", html.encode("utf-8"))


def send_static(req: Request) -> None:
    """``GET /static/<name>``."""
    name = req.url.path[len("/static/"):]
    try:
        ctype, data = asset(name)
    except (FileNotFoundError, KeyError):
        raise HttpError(404, f"not found: {req.url.path}") from None
    req.send(200, ctype, data)
