"""The web server behind the live view, the relabel page and the inference server.

One set of rules for every page and endpoint: a request is answered only when its ``Host``
header names the server (its address, ``localhost``, a loopback address or an allowed name), so
a web page cannot reach it through a DNS name of its own; when a token is set, every request
carries it (``?token=`` or ``Authorization: Bearer``); a ``POST`` from a page of another origin
is refused (``Origin`` and ``Sec-Fetch-Site`` checked), and one that changes files must also
send a JSON body and the ``X-Edgesight`` header, which a page of another origin cannot send
without a CORS preflight this server never grants. Threads are capped: beyond ``max_threads``
connections get 503 at once.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import re
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

from ..errors import ConfigError, EdgesightError
from ..urls import is_loopback, protection_problem

logger = logging.getLogger("edgesight.web")

Route = Callable[["Request"], None]
Routes = Mapping[str, Mapping[str, Route]]
"""``path -> {method: handler}``; a path ending in ``/`` also answers every path under it."""

WRITE_HEADER = "X-Edgesight"
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s]*")
_PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class HttpError(Exception):
    """Ends a request with ``code`` and ``{"error": message}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Request(BaseHTTPRequestHandler):
    """One request: the route handlers' view of it (``query``, ``body()``, ``send*``)."""

    server: "_Server"
    # A client that stops reading (or sending) is dropped after this many seconds instead of holding a thread.
    timeout = 10
    url: Any = None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    @property
    def web(self) -> "WebServer":
        return self.server.web

    @property
    def query(self) -> Dict[str, str]:
        """The first value of each query parameter."""
        return {k: v[0] for k, v in parse_qs(self.url.query).items()}

    @property
    def token_query(self) -> str:
        """``?token=...`` to append to links of pages (empty without a token)."""
        # quote leaves nothing that HTML or JavaScript would read
        return "?token=" + quote(self.web.token, safe="") if self.web.token else ""

    def _refuse(self, method: str, code: int, text: str) -> None:
        if method == "POST":
            self.close_connection = True  # the body may be unread: never parse it as a request
            self.send_json({"error": text.rstrip()}, code)
        else:
            self.send(code, "text/plain; charset=utf-8", text.encode("utf-8"))

    def _handle(self, method: str) -> None:
        self.url = urlsplit(self.path)
        web = self.web
        if not web.host_allowed(self.headers.get("Host", "")):
            self._refuse(method, 403, "host not allowed: open the view by its address, or allow this name with --http-allow-host\n")
            return
        if not web.token_ok(self.query.get("token", ""), self.headers.get("Authorization", "")):
            self._refuse(method, 401, "token required: add ?token=TOKEN to the address or send Authorization: Bearer TOKEN\n")
            return
        if method == "POST":
            problem = cross_origin_problem(self.headers.get("Host", ""), self.headers.get("Origin"),
                                           self.headers.get("Sec-Fetch-Site"))
            if problem:
                self._refuse(method, 403, problem)
                return
        route = web.route(self.url.path)
        try:
            if route is None:
                raise HttpError(404, f"not found: {self.url.path}; try {', '.join(sorted(p for p in web.routes if p != '/static/'))}")
            handler = route.get(method)
            if handler is None:
                raise HttpError(405, f"{method} is not allowed on {self.url.path}; use {' or '.join(sorted(route))}")
            handler(self)
        except HttpError as e:
            self.close_connection = self.close_connection or method == "POST"
            self.send_json({"error": e.message}, e.code)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            logger.debug("client %s went away: %s", self.client_address[0], e)
        except Exception:
            # A bug in one handler answers 500 and is logged in full; the server goes on.
            logger.exception("%s %s failed", method, self.url.path)
            self.close_connection = True
            try:
                self.send_json({"error": "internal error; the device's log has the details"}, 500)
            except OSError:
                pass

    def require_write_intent(self) -> None:
        """A request that changes files: JSON body and the :data:`WRITE_HEADER`, which a page of
        another origin cannot send without a preflight (this server grants none). Refused on a
        page served to the network without a token."""
        if self.web.writes_refusal:
            raise HttpError(403, self.web.writes_refusal)
        if not self.headers.get(WRITE_HEADER):
            raise HttpError(403, f"this request changes files: send the {WRITE_HEADER}: 1 header (the relabel page does)")
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            raise HttpError(415, "send the request as Content-Type: application/json")

    def body(self, limit: Optional[int] = None) -> bytes:
        """The request body, refused (411/413) without a length or above ``limit`` bytes
        (default: the server's ``max_body``) before any of it is read."""
        limit = self.web.max_body if limit is None else limit
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "send the body with a Content-Length (chunked transfer is not accepted)")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HttpError(411, "send the body with a Content-Length header") from None
        if n < 0:
            raise HttpError(400, "Content-Length must not be negative")
        if n > limit:
            raise HttpError(413, f"the body is {n} bytes, above the limit of {limit}; send a smaller image")
        data = self.rfile.read(n)
        if len(data) != n:
            raise HttpError(400, f"the body ended after {len(data)} of {n} bytes")
        return data

    def json_body(self, limit: int = 64 * 1024) -> Dict[str, Any]:
        try:
            obj = json.loads(self.body(limit))
        except ValueError:
            raise HttpError(400, "the body is not JSON") from None
        if not isinstance(obj, dict):
            raise HttpError(400, "the body must be a JSON object")
        return obj

    def send(self, code: int, content_type: str, body: bytes, headers: Sequence[Tuple[str, str]] = (),
             cache: bool = False) -> None:
        """Answer with ``body``; ``cache``: the browser may keep it (content that never changes
        under its address), otherwise nothing is cached."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_common_headers(cache)
        for key, value in headers:
            self.send_header(key, value)
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", _PAGE_POLICY)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_common_headers(self, cache: bool = False) -> None:
        self.send_header("Cache-Control", "private, max-age=86400" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")  # the token may be in the address

    def send_json(self, obj: Any, code: int = 200) -> None:
        self.send(code, "application/json", json.dumps(obj).encode("utf-8"))

    def log_message(self, format: str, *args: Any) -> None:
        text = format % args if args else format
        logger.debug("http %s: %s", self.client_address[0], _TOKEN_IN_TEXT.sub(r"\1***", text))


def cross_origin_problem(host: str, origin: Optional[str], fetch_site: Optional[str]) -> Optional[str]:
    """Why a POST looks sent by a page of another origin, or None: a browser names the page's
    origin in ``Origin`` (and says ``cross-site`` or ``same-site`` in ``Sec-Fetch-Site``); a
    program such as curl sends neither."""
    if fetch_site and fetch_site.strip().lower() in ("cross-site", "same-site"):
        return "cross-origin request refused: post from the page this server serves"
    if origin is None:
        return None
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.strip().lower():
        return "cross-origin request refused: post from the page this server serves"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], web: "WebServer", max_threads: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.web = web
        self._slots = threading.BoundedSemaphore(max_threads)
        self.max_threads = max_threads
        self._busy = 0
        self._busy_lock = threading.Lock()
        super().__init__(address, Request)

    @property
    def busy(self) -> int:
        """Connections being served now (each holds one of the ``max_threads`` slots)."""
        return self._busy

    def _count(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta

    def process_request(self, request: Any, client_address: Any) -> None:
        # A thread per connection, up to the cap; beyond it the connection is answered 503 and
        # closed here without blocking the accept loop on a client that does not read.
        if not self._slots.acquire(blocking=False):
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
                             b"Connection: close\r\n\r\ntoo many requests.\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self._count(1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)
            self._slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall for
        # seconds on a device without DNS; the name is only used in CGI environments.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class WebServer:
    """Serves ``routes`` from daemon threads, one per connection, under the rules of the module.

    Args:
        host: the address to listen on (127.0.0.1 unless told otherwise: ``0.0.0.0`` exposes
            it to the whole network, which should be a deliberate choice).
        port: the TCP port; 0 picks a free one (see :attr:`address`).
        routes: ``path -> {method: handler}``.
        allow_hosts: further host names it may be reached by.
        token: required on every request, as ``?token=`` or ``Authorization: Bearer``.
        insecure: serve a non-loopback address without a token (refused otherwise).
        max_threads: connections served at once; more get 503.
        max_body: the largest request body accepted, in bytes.

    Raises:
        ConfigError: max_threads or max_body below 1, or a non-loopback address without a token
            and without ``insecure``.
        EdgesightError: the address cannot be bound (in use, not permitted, not local).
    """

    def __init__(self, host: str, port: int, routes: Routes, *, allow_hosts: Sequence[str] = (),
                 token: Optional[str] = None, insecure: bool = False, max_threads: int = 16,
                 max_body: int = 10 * 2**20) -> None:
        if max_threads < 1:
            raise ConfigError(f"max_threads must be at least 1, got {max_threads}")
        if max_body < 1:
            raise ConfigError(f"max_body must be at least 1 byte, got {max_body}")
        problem = protection_problem(host, token, insecure)
        if problem:
            raise ConfigError(problem)
        self.token = token or None
        # Without a token on an address other machines reach (--http-insecure), anyone on the
        # network could move files: requests that change something are refused.
        self.writes_refusal: Optional[str] = None if self.token or is_loopback(host) else \
            "changes are off on a page served to the network without a token; give --http-token"
        self.routes = dict(routes)
        self.max_body = int(max_body)
        self._allowed = {"localhost", host.lower(), *(h.lower().rstrip(".") for h in allow_hosts)}
        try:
            self.httpd = _Server((host, port), self, max_threads)
        except OSError as e:
            hint = (
                "another program (or another edgesight) uses it; choose another port"
                if e.errno == errno.EADDRINUSE
                else "ports below 1024 need root; choose a port such as 8080"
                if e.errno == errno.EACCES
                else "use 127.0.0.1, 0.0.0.0 or an address of this machine"
            )
            raise EdgesightError(f"cannot serve HTTP on {host}:{port}: {e.strerror or e}; {hint}") from e
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="edgesight-http", daemon=True
        )
        self._closed = False
        self._thread.start()
        self._allowed.add(self.address[0].lower())

    def route(self, path: str) -> Optional[Mapping[str, Route]]:
        """The handlers of ``path``: its own, or those of the longest ``.../`` prefix route."""
        if path in self.routes:
            return self.routes[path]
        prefixes = [p for p in self.routes if p.endswith("/") and p != "/" and path.startswith(p)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this server."""
        host = header.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.rstrip(".")
        if host in self._allowed:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or self.address[0] in ("0.0.0.0", "::")

    def token_ok(self, given: str, authorization: str) -> bool:
        """Whether a request carries the token (always, when there is none)."""
        if not self.token:
            return True
        if not given and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    @property
    def address(self) -> Tuple[str, int]:
        """The ``(host, port)`` actually bound."""
        host, port = self.httpd.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        """The server's address, e.g. ``http://127.0.0.1:8080/``."""
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def close(self) -> None:
        """Stop serving: stop the server thread, release the port."""
        if self._closed:
            return
        self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2.0)
