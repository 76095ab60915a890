"""A small web server: a live page, an MJPEG stream and ``/status`` JSON."""

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
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import parse_qs, quote, urlsplit

import cv2
import numpy as np

from ..errors import ConfigError, EdgesightError
from ..frames import Frame, Result
from ..urls import is_loopback, protection_problem
from ._common import annotated_or_draw
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgesight</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{margin:0;background:#111;color:#eee;font:16px system-ui,sans-serif}}
main{{max-width:1000px;margin:auto;padding:12px}}
img{{width:100%;background:#000;display:block}}
#label{{font-size:2em;font-weight:600}}
pre{{background:#222;padding:8px;overflow:auto;font-size:12px}}
</style></head><body><main>
<img src="/stream.mjpg{query}" alt="live stream">
<p><span id="label">waiting for results</span> <span id="score"></span></p>
<pre id="status"></pre>
</main><script>
async function refresh() {{
  try {{
    const r = await fetch("/status{query}", {{cache: "no-store"}});
    const s = await r.json();
    const now = s.latest || s.result;
    if (now) {{
      document.getElementById("label").textContent = now.label;
      document.getElementById("score").textContent = (100 * now.score).toFixed(1) + "%";
    }}
    document.getElementById("status").textContent = JSON.stringify(s, null, 2);
  }} catch (e) {{
    document.getElementById("status").textContent = "no connection to the device";
  }}
}}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""

_BOUNDARY = "frame"
_TOKEN_IN_TEXT = re.compile(r"(token=)[^&\s]*")



class _FrameHub:
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], sink: "HttpSink", max_threads: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sink = sink
        self._slots = threading.BoundedSemaphore(max_threads)
        self.max_threads = max_threads
        self._busy = 0
        self._busy_lock = threading.Lock()
        super().__init__(address, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that stops reading is dropped after this many seconds instead of holding a thread.
    timeout = 10

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path, sink = url.path, self.server.sink
        if not sink.host_allowed(self.headers.get("Host", "")):
            self._send(403, "text/plain; charset=utf-8",
                       b"host not allowed: open the view by its address, or allow this name with --http-allow-host\n")
            return
        given = parse_qs(url.query).get("token", [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = given or auth[7:].strip()
        if sink.token and not hmac.compare_digest(given.encode("utf-8"), sink.token.encode("utf-8")):
            self._send(401, "text/plain; charset=utf-8",
                       b"token required: add ?token=TOKEN to the address or send Authorization: Bearer TOKEN\n")
            return
        if path in ("/", "/index.html"):
            query = "?token=" + quote(sink.token, safe="") if sink.token else ""  # quote leaves nothing HTML or JS would read
            self._send(200, "text/html; charset=utf-8", _PAGE.format(query=query).encode("utf-8"))
        elif path == "/status":
            self._send(200, "application/json", self.server.sink.status_json().encode("utf-8"))
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /, /status or /stream.mjpg\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        hub = self.server.sink.hub
        if not hub.add_client():
            self._send(503, "text/plain; charset=utf-8", b"too many stream clients; try again later\n")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            while True:
                item = hub.next_jpeg(seq)
                if item is None:
                    return
                seq, jpeg = item
                head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            logger.debug("stream client %s went away: %s", self.client_address[0], e)
        finally:
            hub.remove_client()

    def log_message(self, format: str, *args: Any) -> None:
        text = format % args if args else format
        logger.debug("http %s: %s", self.client_address[0], _TOKEN_IN_TEXT.sub(r"\1***", text))


class HttpSink(Sink):
    """A small web server: ``/`` a live page, ``/stream.mjpg`` MJPEG, ``/status`` JSON.

    It serves from daemon threads, one per client, so it never blocks the loop; ``write`` only
    stores the latest frame and event. Bound to 127.0.0.1 unless told otherwise: binding to
    ``0.0.0.0`` exposes the camera to the whole network, which should be a deliberate choice.

    Attributes:
        hub: the shared latest frame (``hub.clients`` counts connected stream viewers).
    """

    needs_annotated = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, jpeg_quality: int = 80, max_clients: int = 8,
                 allow_hosts: Sequence[str] = (), token: Optional[str] = None, insecure: bool = False,
                 max_threads: Optional[int] = None) -> None:
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
        problem = protection_problem(host, token, insecure)
        if problem:
            raise ConfigError(problem)
        self.token = token or None
        self._allowed = {"localhost", host.lower(), *(h.lower().rstrip(".") for h in allow_hosts)}
        self.hub = _FrameHub(jpeg_quality, max_clients)
        self._lock = threading.Lock()
        self._event: Optional[dict] = None
        self._stats: Dict[str, Any] = {}
        self._stats_event: Optional[dict] = None
        self._snapshot = False
        try:
            self._server = _Server((host, port), self, max_threads)
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
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="edgesight-http", daemon=True
        )
        self._closed = False
        self._thread.start()
        self._allowed.add(self.address[0].lower())
        logger.info("serving the live view at %s (%s)", self.url,
                    "protected by a token" if self.token else
                    "NOT protected: anyone who can reach this address sees the camera; give --http-token"
                    if not is_loopback(self.address[0]) else "not protected by a token, reachable from this machine only")

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this view (see :meth:`__init__`)."""
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

    @property
    def address(self) -> Tuple[str, int]:
        """The ``(host, port)`` actually bound."""
        host, port = self._server.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8080/``."""
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Publish the frame to stream viewers and the event to ``/status``.

        The sink keeps a reference to ``annotated`` until the next frame (the loop's overlay is
        a fresh copy per frame), so it must not be modified in place afterwards.
        """
        event = result.to_event()
        with self._lock:
            self._event = event
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
        json.dumps([stats, result])
        with self._lock:
            self._stats = stats
            self._snapshot = snapshot
            self._stats_event = result

    def status_json(self) -> str:
        """The ``/status`` body: ``{"result": event or null, "stats": {...}, "latest": event or
        null, "clients": n}``. ``result`` is the one the statistics end on once there are
        statistics (one snapshot), the latest before; ``latest`` is the newest frame's, which the
        page shows so its label follows every frame."""
        with self._lock:
            event = self._stats_event if self._snapshot else self._event
            return json.dumps({"result": event, "stats": self._stats, "latest": self._event, "clients": self.hub.clients})

    def close(self) -> None:
        """Stop serving: end every stream, stop the server thread, release the port."""
        if self._closed:
            return
        self._closed = True
        self.hub.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)
