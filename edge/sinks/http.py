"""Result sinks: where the camera loop sends each classification.

Every sink implements :class:`~edgesight.edge.frames.Sink` (``needs_annotated``, ``write``, ``close``):

- :class:`JsonlSink` — one JSON event per line, flushed per line.
- :class:`VideoSink` — the annotated frames as an .mp4 or .avi file.
- :class:`DisplaySink` — a desktop window (needs a GUI build of OpenCV).
- :class:`HttpSink` — a status page, ``/status`` JSON and an MJPEG stream for any browser.
- :class:`MqttSink` — events to an MQTT broker (paho-mqtt).
- :class:`GpioSink` — a pulse on a GPIO pin for chosen labels (gpiozero).
- :class:`AsyncSink` — runs another sink on its own thread so a slow one never stalls inference.

A sink never takes the loop down for a problem of its own at run time (a full disk, a lost broker,
a crashed worker): it logs one clear message and carries on or disables itself. Problems the
user must fix before running (a headless OpenCV, an unwritable path, a bad URL) raise
:class:`~edgesight.edge.errors.EdgesightError` from the constructor.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from ..errors import ConfigError, EdgesightError, MissingDependencyError
from ..frames import Frame, Result, Sink
from ..fsutil import PathLike, write_bytes
from ..loop.overlay import draw_overlay

logger = logging.getLogger("edgesight.sinks")


class _ChangeFilter:
    """Tracks the label this sink saw last, so "changed" is judged on what the sink received
    (robust to frames an :class:`AsyncSink` dropped before it)."""

    def __init__(self) -> None:
        self._last: Optional[str] = None

    def changed(self, label: str) -> bool:
        changed = label != self._last
        self._last = label
        return changed


def _annotated_or_draw(frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> np.ndarray:
    # The loop passes an annotated frame when any sink asks for one; used on its own, a sink
    # still shows the result rather than a bare frame.
    return annotated if annotated is not None else draw_overlay(frame.image, result)


# --------------------------------------------------------------------------------------------
# JSONL


class JsonlSink:
    """Writes ``Result.to_event()`` as one JSON object per line.

    The file is created (or truncated) when the sink is built and every line is written straight
    to the operating system, so ``tail -f`` sees each result as it happens and a power cut loses
    at most the line being written. If a write fails (a full disk, a removed SD card) the sink
    logs one error naming the file and disables itself; the camera loop carries on.

    Attributes:
        written: lines written so far.
        disabled: True once a write failed.
        error: the ``OSError`` that disabled the sink, else None.
    """

    needs_annotated = False

    def __init__(self, path: PathLike, on_change_only: bool = False) -> None:
        """Create or truncate the file.

        Args:
            path: the .jsonl file to write; ``-`` writes to standard output.
            on_change_only: write only the first result and those whose label differs from the
                previous result this sink received.

        Raises:
            EdgesightError: the file cannot be created.
        """
        self.path = str(path)
        self.on_change_only = on_change_only
        self.written = 0
        self.disabled = False
        self.error: Optional[OSError] = None
        self._change = _ChangeFilter()
        self._file = None
        if self.path != "-":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # Unbuffered: each line reaches the OS at once, and a failed write leaves no
                # buffered bytes behind that would fail again when the file is closed.
                self._file = open(self.path, "wb", buffering=0)
            except OSError as e:
                raise EdgesightError(
                    f"cannot create the JSONL log {self.path}: {e.strerror or e}; choose a writable path"
                ) from e

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Append the result's event as one line (unless filtered or disabled)."""
        if self.disabled:
            return
        changed = self._change.changed(result.label)
        if self.on_change_only and not changed:
            return
        line = json.dumps(result.to_event(), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            if self._file is None:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                data = memoryview(line.encode("utf-8"))
                while data:
                    data = data[self._file.write(data) :]
        except OSError as e:
            self._disable(e)
            return
        self.written += 1

    def _disable(self, e: OSError) -> None:
        self.disabled = True
        self.error = e
        where = "standard output" if self._file is None else self.path
        if e.errno == errno.ENOSPC:
            why = "the disk is full; free some space or write the log to another disk"
        else:
            why = e.strerror or str(e)
        logger.error(
            "JSONL log disabled: cannot write to %s: %s. Results are no longer logged there; "
            "the camera loop carries on.", where, why,
        )

    def close(self) -> None:
        """Close the file (standard output is left open)."""
        if self._file is not None:
            self._file.close()


# --------------------------------------------------------------------------------------------
# Video file

_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


class VideoSink:
    """Writes the annotated frames to a video file with ``cv2.VideoWriter``.

    The codec follows the extension: ``mp4v`` for ``.mp4``, ``MJPG`` for ``.avi``. The writer is
    opened at the first frame, at ``size`` or else that frame's size; frames of another size (an
    image-folder source) are resized to it.

    Attributes:
        frames_written: frames written so far.
    """

    needs_annotated = True

    def __init__(self, path: PathLike, fps: float, size: Optional[Tuple[int, int]] = None) -> None:
        """Check the arguments; the file is created at the first frame.

        Args:
            path: the output ``.mp4`` or ``.avi`` file; its folder is created.
            fps: the frame rate stored in the file (the camera's, for real-time playback).
            size: ``(width, height)`` of the video, or None for the first frame's size.

        Raises:
            ConfigError: an unsupported extension, a non-positive fps or size.
        """
        self.path = str(path)
        suffix = Path(self.path).suffix.lower()
        if suffix not in _FOURCC:
            raise ConfigError(f"cannot write video {self.path}: use a .mp4 (mp4v) or .avi (MJPG) file name")
        if not fps > 0:
            raise ConfigError(f"video fps must be positive, got {fps}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ConfigError(f"video size must be (width, height) in pixels, got {size}")
        self.fps = float(fps)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.fourcc = _FOURCC[suffix]
        self.frames_written = 0
        self._writer: Optional[cv2.VideoWriter] = None
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _open(self, image: np.ndarray) -> cv2.VideoWriter:
        if self.size is None:
            w, h = image.shape[1], image.shape[0]
            if self.fourcc == "mp4v":
                # MPEG-4 part 2 needs even dimensions; trim a pixel rather than fail to open.
                w, h = max(2, w - w % 2), max(2, h - h % 2)
            self.size = (w, h)
        writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
        if not writer.isOpened():
            raise EdgesightError(
                f"cannot open {self.path} to write a {self.fourcc} video at {self.size[0]}x{self.size[1]}: "
                "check that the folder is writable, or use an .avi file (MJPG is built into every OpenCV)"
            )
        return writer

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Append one frame (the annotated one when given).

        Raises:
            EdgesightError: the video file cannot be opened at the first frame.
        """
        image = _annotated_or_draw(frame, result, annotated)
        if self._writer is None:
            self._writer = self._open(image)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (writes the container index an .mp4 needs to play)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# --------------------------------------------------------------------------------------------
# Desktop window

HEADLESS_HELP = (
    "the window needs an OpenCV build with GUI support, but the installed OpenCV is headless "
    "(cv2.imshow: the function is not implemented). Install a GUI build: "
    "pip uninstall -y opencv-python-headless && pip install opencv-python "
    "(on Raspberry Pi OS: sudo apt install python3-opencv, and use a venv created with "
    "--system-site-packages), or watch the stream in a browser instead with --http 127.0.0.1:8080, "
    "which works everywhere."
)

_QUIT_KEYS = (ord("q"), ord("Q"), 27)


def _opencv_gui() -> Optional[str]:
    """The GUI backend named in OpenCV's build information ("NONE" when headless), if listed."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1) if match else None


class DisplaySink:
    """Shows the annotated frames in a desktop window (``cv2.imshow``).

    Pressing ``q`` or ``Esc`` in the window sets :attr:`quit_requested`, which the loop reads.
    Keep this sink on the loop's thread (do not wrap it in :class:`AsyncSink`): GUI toolkits
    expect their windows to be driven from one thread.

    Attributes:
        quit_requested: True once the user pressed ``q`` or ``Esc``.
    """

    needs_annotated = True

    def __init__(self, window_name: str = "edgesight") -> None:
        """Open the window, checking first that this OpenCV and session can show one.

        Args:
            window_name: the window title.

        Raises:
            EdgesightError: OpenCV is a headless build (the message says how to install a GUI
                build, or to use ``--http``), or there is no desktop session to show a window on.
        """
        self.window_name = window_name
        self.quit_requested = False
        if _opencv_gui() == "NONE":
            raise EdgesightError(HEADLESS_HELP)
        # Without a display, GUI backends abort the whole process instead of raising, so the
        # probe below must not run; QT_QPA_PLATFORM may name a display-less Qt backend.
        if (
            sys.platform.startswith("linux")
            and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")
            and not os.environ.get("QT_QPA_PLATFORM")
        ):
            raise EdgesightError(
                "the window needs a desktop session, but neither DISPLAY nor WAYLAND_DISPLAY is set "
                "(over SSH, for example). Run it from the device's desktop, or export DISPLAY=:0 if a "
                "desktop is running there, or watch the stream in a browser instead with "
                "--http 127.0.0.1:8080, which works everywhere."
            )
        try:
            cv2.imshow(window_name, np.zeros((1, 1, 3), np.uint8))
            cv2.waitKey(1)
        except cv2.error as e:
            if "not implemented" in str(e).lower():
                raise EdgesightError(HEADLESS_HELP) from e
            raise EdgesightError(
                f"OpenCV cannot open a window: {str(e).strip()}. Watch the stream in a browser instead "
                "with --http 127.0.0.1:8080, which works everywhere."
            ) from e

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Show the frame and poll the keyboard once (``waitKey(1)``)."""
        cv2.imshow(self.window_name, _annotated_or_draw(frame, result, annotated))
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in _QUIT_KEYS:
            self.quit_requested = True

    def close(self) -> None:
        """Close the window."""
        cv2.destroyWindow(self.window_name)
        # The toolkit only processes the close request while it pumps events.
        cv2.waitKey(1)


# --------------------------------------------------------------------------------------------
# HTTP: status page, /status JSON, MJPEG stream

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgesight</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;background:#111;color:#eee;font:16px system-ui,sans-serif}
main{max-width:1000px;margin:auto;padding:12px}
img{width:100%;background:#000;display:block}
#label{font-size:2em;font-weight:600}
pre{background:#222;padding:8px;overflow:auto;font-size:12px}
</style></head><body><main>
<img src="/stream.mjpg" alt="live stream">
<p><span id="label">waiting for results</span> <span id="score"></span></p>
<pre id="status"></pre>
</main><script>
async function refresh() {
  try {
    const r = await fetch("/status", {cache: "no-store"});
    const s = await r.json();
    if (s.result) {
      document.getElementById("label").textContent = s.result.label;
      document.getElementById("score").textContent = (100 * s.result.score).toFixed(1) + "%";
    }
    document.getElementById("status").textContent = JSON.stringify(s, null, 2);
  } catch (e) {
    document.getElementById("status").textContent = "no connection to the device";
  }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""

_BOUNDARY = "frame"


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

    def __init__(self, address: Tuple[str, int], sink: "HttpSink") -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sink = sink
        super().__init__(address, _Handler)

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
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", _PAGE.encode("utf-8"))
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
        logger.debug("http %s: " + format, self.client_address[0], *args)


class HttpSink:
    """A small web server: ``/`` a live page, ``/stream.mjpg`` MJPEG, ``/status`` JSON.

    It serves from daemon threads, one per client, so it never blocks the loop; ``write`` only
    stores the latest frame and event. Bound to 127.0.0.1 unless told otherwise: binding to
    ``0.0.0.0`` exposes the camera to the whole network, which should be a deliberate choice.

    Attributes:
        hub: the shared latest frame (``hub.clients`` counts connected stream viewers).
    """

    needs_annotated = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, jpeg_quality: int = 80, max_clients: int = 8) -> None:
        """Start serving in a background thread.

        Args:
            host: the address to listen on.
            port: the TCP port; 0 picks a free one (see :attr:`address`).
            jpeg_quality: JPEG quality of the stream, 1-100.
            max_clients: concurrent stream viewers allowed (each holds a thread and an encode).

        Raises:
            ConfigError: jpeg_quality or max_clients out of range.
            EdgesightError: the address cannot be bound (in use, not permitted, not local).
        """
        if not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1-100, got {jpeg_quality}")
        if max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {max_clients}")
        self.hub = _FrameHub(jpeg_quality, max_clients)
        self._lock = threading.Lock()
        self._event: Optional[dict] = None
        self._stats: Dict[str, Any] = {}
        try:
            self._server = _Server((host, port), self)
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
        logger.info("serving the live view at %s", self.url)

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
        self.hub.put(_annotated_or_draw(frame, result, annotated))

    def update_stats(self, stats: Dict[str, Any]) -> None:
        """Replace the ``stats`` object shown by ``/status`` (fps, dropped frames, uptime...).

        Raises:
            TypeError: a value is not JSON-serialisable (raised here, not later in a request).
        """
        json.dumps(stats)
        with self._lock:
            self._stats = dict(stats)

    def status_json(self) -> str:
        """The ``/status`` body: ``{"result": latest event or null, "stats": {...}, "clients": n}``."""
        with self._lock:
            return json.dumps({"result": self._event, "stats": self._stats, "clients": self.hub.clients})

    def close(self) -> None:
        """Stop serving: end every stream, stop the server thread, release the port."""
        if self._closed:
            return
        self._closed = True
        self.hub.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


# --------------------------------------------------------------------------------------------
# MQTT


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``mqtt://`` / ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool
    username: Optional[str]
    password: Optional[str]
    prefix: str

    def display(self) -> str:
        """The URL without the password, for logs and messages."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt://[user:pass@]host[:port]/topic/prefix`` (``mqtts://`` for TLS).

    The port defaults to 1883 (8883 with TLS) and the prefix to ``edgesight``. User name and
    password may be percent-encoded.

    Raises:
        ConfigError: another scheme, no host, a bad port, or a prefix with ``+`` or ``#``.
    """
    parts = urlsplit(url)
    example = "mqtt://[user:password@]host[:port]/topic/prefix"
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"MQTT URL {url!r} must start with mqtt:// or mqtts:// (TLS), e.g. {example}")
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"MQTT URL {url!r} has an invalid port; expected {example}") from e
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r} has no broker host; expected {example}")
    prefix = parts.path.strip("/") or "edgesight"
    if "+" in prefix or "#" in prefix or "//" in prefix:
        raise ConfigError(f"MQTT topic prefix {prefix!r} may not contain '+', '#' or empty levels")
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=prefix,
    )


class MqttSink:
    """Publishes each result's event as JSON to ``<prefix>/result`` on an MQTT broker.

    Topics:
        ``<prefix>/result``: ``Result.to_event()`` JSON, every result (or changes only).
        ``<prefix>/label``: the label as plain text, on the first result and each change.
        ``<prefix>/status``: ``online`` when connected, ``offline`` on close, and ``offline``
        as the last will, so the broker announces a device that vanished; always retained.

    Connecting, reconnecting (with back-off) and sending happen on paho's network thread;
    ``write`` never blocks. While disconnected, QoS 1/2 messages wait in paho's queue (up to
    ``max_queued``, then new ones are dropped and counted) and are sent after reconnecting;
    QoS 0 messages are at-most-once by definition and are dropped (and counted) while offline.

    Attributes:
        published: messages handed to paho (sent or queued).
        dropped: messages lost to a full queue or, at QoS 0, to a lost connection.
    """

    needs_annotated = False

    def __init__(
        self,
        url: str,
        qos: int = 0,
        retain: bool = False,
        on_change_only: bool = False,
        client_id: Optional[str] = None,
        *,
        keepalive: int = 30,
        reconnect_delay: Tuple[float, float] = (1, 30),
        max_queued: int = 1000,
    ) -> None:
        """Start connecting in the background (a broker that is down is retried, not an error).

        Args:
            url: ``mqtt://[user:pass@]host[:port]/topic/prefix``; ``mqtts://`` for TLS with the
                system's CA certificates.
            qos: MQTT QoS 0, 1 or 2 for results and labels.
            retain: retain results and labels, so a new subscriber gets the latest at once.
            on_change_only: publish results only when the label changes.
            client_id: the MQTT client id; default ``edgesight-<hostname>-<pid>``.
            keepalive: seconds between keep-alive pings; a dead link shows after 1.5x this.
            reconnect_delay: ``(min, max)`` seconds between reconnect attempts (doubling).
            max_queued: QoS 1/2 messages kept while disconnected.

        Raises:
            ConfigError: a bad URL, QoS or queue size.
            MissingDependencyError: paho-mqtt 2.x is not installed.
        """
        if qos not in (0, 1, 2):
            raise ConfigError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
        if max_queued < 1:
            raise ConfigError(f"max_queued must be at least 1, got {max_queued}")
        self.target = parse_mqtt_url(url)
        mqtt = _import_paho()
        self._mqtt = mqtt
        self.qos = qos
        self.retain = retain
        self.on_change_only = on_change_only
        self.max_queued = max_queued
        self.topic_result = f"{self.target.prefix}/result"
        self.topic_label = f"{self.target.prefix}/label"
        self.topic_status = f"{self.target.prefix}/status"
        self.published = 0
        self.dropped = 0
        self._change = _ChangeFilter()
        self._connected = threading.Event()
        self._closing = False
        self._closed = False
        # One warning per outage, not one per reconnect attempt or per dropped message.
        self._outage_logged = False
        self._drop_logged = False

        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edgesight-{socket.gethostname()}-{os.getpid()}",
        )
        client.will_set(self.topic_status, "offline", qos=1, retain=True)
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=reconnect_delay[0], max_delay=reconnect_delay[1])
        client.max_queued_messages_set(max_queued)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(self.target.host, self.target.port, keepalive)
        client.loop_start()

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it has not been lost since."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection; returns :attr:`connected`."""
        return self._connected.wait(timeout)

    def _warn_outage(self, message: str, *args: Any) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(message, *args)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._warn_outage(
                "MQTT broker %s refused the connection (%s); check the user name and password in "
                "the URL; retrying in the background", self.target.display(), reason_code,
            )
            return
        logger.info("MQTT connected to %s", self.target.display())
        self._outage_logged = False
        self._drop_logged = False
        self._connected.set()
        client.publish(self.topic_status, "online", qos=1, retain=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._warn_outage(
            "cannot reach the MQTT broker at %s; retrying in the background (QoS %d results %s)",
            self.target.display(), self.qos, "are queued" if self.qos else "are dropped until then",
        )

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._closing:
            self._warn_outage(
                "lost the connection to the MQTT broker at %s (%s); reconnecting in the background",
                self.target.display(), reason_code,
            )

    def _publish(self, topic: str, payload: str) -> None:
        rc = self._client.publish(topic, payload, qos=self.qos, retain=self.retain).rc
        codes = self._mqtt.MQTTErrorCode
        # paho keeps QoS 1/2 messages it could not send yet (rc NO_CONN) and resends them after
        # reconnecting; QoS 0 ones are gone, and a full queue refuses the message.
        if rc == codes.MQTT_ERR_SUCCESS or (rc == codes.MQTT_ERR_NO_CONN and self.qos > 0):
            self.published += 1
            return
        self.dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            why = (
                f"the queue of {self.max_queued} unsent messages is full"
                if rc == codes.MQTT_ERR_QUEUE_SIZE
                else f"paho: {self._mqtt.error_string(rc)}"
            )
            logger.warning("MQTT results to %s are being dropped: %s", self.target.display(), why)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Publish the result (and the label when it changed); never blocks."""
        changed = self._change.changed(result.label)
        if self.on_change_only and not changed:
            return
        self._publish(self.topic_result, json.dumps(result.to_event(), ensure_ascii=False, separators=(",", ":")))
        if changed:
            self._publish(self.topic_label, result.label)

    def close(self, timeout: float = 2.0) -> None:
        """Announce ``offline``, disconnect and stop the network thread.

        Args:
            timeout: seconds to wait for the broker to acknowledge the ``offline`` message
                (and so everything sent before it).
        """
        if self._closed:
            return
        self._closed = True
        self._closing = True
        codes = self._mqtt.MQTTErrorCode
        if self.connected:
            info = self._client.publish(self.topic_status, "offline", qos=1, retain=True)
            if info.rc == codes.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout)
        else:
            logger.warning(
                "closing the MQTT sink while disconnected from %s: unsent messages are discarded",
                self.target.display(),
            )
        self._client.disconnect()
        self._client.loop_stop()


def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as e:
        raise MissingDependencyError(
            "the MQTT sink needs the Python package 'paho-mqtt' 2.x, which is not installed: "
            "pip install 'paho-mqtt>=2.0' (a dependency of edgesight; reinstalling edgesight also brings it)"
        ) from e
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise MissingDependencyError(
            "the MQTT sink needs paho-mqtt 2.x, but an older version is installed: pip install -U 'paho-mqtt>=2.0'"
        )
    return mqtt


# --------------------------------------------------------------------------------------------
# GPIO

DeviceFactory = Callable[[Union[int, str], bool], Any]


def gpiozero_output(pin: Union[int, str], active_high: bool) -> Any:
    """The default GPIO device factory: a gpiozero ``DigitalOutputDevice``, initially off.

    Raises:
        MissingDependencyError: gpiozero is not installed.
        EdgesightError: the pin cannot be used (wrong number, busy, not a Raspberry Pi).
    """
    try:
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError
    except ImportError as e:
        raise MissingDependencyError(
            "the GPIO sink needs the Python package 'gpiozero', which is not installed: "
            "pip install 'edgesight[gpio]' (or pip install gpiozero; on Raspberry Pi OS: "
            "sudo apt install python3-gpiozero, with a venv created with --system-site-packages)"
        ) from e
    try:
        return DigitalOutputDevice(pin, active_high=active_high, initial_value=False)
    except GPIOZeroError as e:
        raise EdgesightError(
            f"cannot use GPIO pin {pin}: {e}. Check the pin (BCM numbering, e.g. 17 or 'GPIO17'), that no "
            "other program holds it, and that this is a Raspberry Pi (GPIOZERO_PIN_FACTORY=mock simulates one)"
        ) from e


class GpioSink:
    """Pulses a GPIO pin when the label is one of ``on_labels`` (e.g. a reject gate).

    The pulse runs on gpiozero's background blink thread, so ``write`` returns at once. A
    matching result that arrives during a pulse restarts it, so the output stays on while a
    run of matching frames lasts and goes off ``pulse_ms`` after the last one.

    Attributes:
        pulses: pulses started so far.
    """

    needs_annotated = False

    def __init__(
        self,
        pin: Union[int, str],
        on_labels: Iterable[str],
        pulse_ms: float = 100,
        active_high: bool = True,
        *,
        device_factory: Optional[DeviceFactory] = None,
    ) -> None:
        """Claim the pin.

        Args:
            pin: the GPIO pin, BCM numbering (``17``, ``"GPIO17"``, ``"BOARD11"``).
            on_labels: labels that trigger a pulse (a single string counts as one label).
            pulse_ms: pulse length in milliseconds.
            active_high: False when the load is switched on by a low level.
            device_factory: ``factory(pin, active_high)`` returning an object with gpiozero's
                ``blink(on_time, off_time, n, background)``, ``off()`` and ``close()``;
                default :func:`gpiozero_output`.

        Raises:
            ConfigError: no labels or a non-positive pulse.
            MissingDependencyError: gpiozero is not installed (default factory).
            EdgesightError: the pin cannot be used (default factory).
        """
        labels = frozenset([on_labels] if isinstance(on_labels, str) else on_labels)
        if not labels:
            raise ConfigError("GpioSink needs at least one label to pulse on")
        if not pulse_ms > 0:
            raise ConfigError(f"pulse_ms must be positive, got {pulse_ms}")
        self.pin = pin
        self.on_labels = labels
        self.pulse_ms = float(pulse_ms)
        self.pulses = 0
        self._device = (device_factory or gpiozero_output)(pin, active_high)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Start a pulse if the label is one of ``on_labels``; returns immediately."""
        if result.label in self.on_labels:
            self._device.blink(on_time=self.pulse_ms / 1000.0, off_time=0, n=1, background=True)
            self.pulses += 1

    def close(self) -> None:
        """Switch the output off and release the pin."""
        self._device.off()
        self._device.close()


# --------------------------------------------------------------------------------------------
# Running a sink on its own thread


class AsyncSink:
    """Runs another sink's ``write`` on a worker thread behind a bounded queue.

    When the queue is full the oldest waiting result is dropped (and counted), so a slow sink
    (a congested network, a slow SD card) never stalls a camera's inference and always catches
    up with the newest results. With ``lossless`` set (the loop sets it for video files and
    folders read frame by frame, where every result must be recorded) a full queue makes the
    caller wait instead, so the file is processed at the pace of its slowest output. An
    exception in the inner sink is logged with the sink's name and disables it; it never
    reaches the loop. Frames are queued by reference: the caller must not modify them in place
    afterwards. Not for :class:`DisplaySink` (GUI calls belong to one thread).

    Attributes:
        dropped: results dropped because the queue was full (or abandoned at close).
        written: results the inner sink wrote.
        lossless: wait for room instead of dropping when the queue is full.
        disabled: True once the inner sink raised.
        error: that exception, else None.
    """

    def __init__(self, sink: Sink, maxsize: int = 8, name: Optional[str] = None) -> None:
        """Start the worker thread.

        Args:
            sink: the sink to run.
            maxsize: results waiting at most; 1 keeps only the newest.
            name: the name used in logs; default the inner sink's class name.

        Raises:
            ConfigError: maxsize below 1.
        """
        if maxsize < 1:
            raise ConfigError(f"AsyncSink maxsize must be at least 1, got {maxsize}")
        self.sink = sink
        self.name = name or type(sink).__name__
        self.maxsize = maxsize
        self.dropped = 0
        self.written = 0
        self.lossless = False
        self.disabled = False
        self.error: Optional[BaseException] = None
        self._queue: Deque[Tuple[Frame, Result, Optional[np.ndarray]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"edgesight-sink-{self.name}", daemon=True)
        self._thread.start()

    @property
    def needs_annotated(self) -> bool:
        """The inner sink's ``needs_annotated``."""
        return self.sink.needs_annotated

    @property
    def needs_raw_frame(self) -> bool:
        """The inner sink's ``needs_raw_frame``."""
        return bool(getattr(self.sink, "needs_raw_frame", False))

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Queue the result for the worker; never blocks unless ``lossless`` is set.

        Raises:
            RuntimeError: the sink was closed.
        """
        with self._cond:
            if self._closing:
                raise RuntimeError(f"{self.name} (async) is closed")
            if self.lossless:
                self._cond.wait_for(lambda: len(self._queue) < self.maxsize or self.disabled)
            if self.disabled:
                return
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((frame, result, annotated))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    break
                item = self._queue.popleft()
                self._cond.notify_all()  # room for a lossless writer
            if self.disabled:
                continue
            try:
                self.sink.write(*item)
                self.written += 1
            except Exception as e:  # noqa: BLE001 - any failure of a sink must stay out of the loop
                self.disabled = True
                self.error = e
                logger.error("sink %s failed and is disabled; the camera loop carries on without it: %s",
                             self.name, e, exc_info=e)
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001 - closing runs on the worker; report, don't lose it
            self.error = self.error or e
            logger.error("sink %s failed to close: %s", self.name, e, exc_info=e)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the inner sink (on the worker thread).

        Args:
            timeout: seconds to wait for the queue to drain. After that the remaining results
                are dropped (and counted), a warning is logged, and the inner sink is closed
                as soon as its current write returns.
        """
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                abandoned = len(self._queue)
                self._queue.clear()
                self.dropped += abandoned
            logger.warning(
                "sink %s did not finish within %.1f s; dropped %d queued results; it is closed when "
                "its current write returns", self.name, timeout, abandoned,
            )


class ReviewSink:
    """Saves the frames whose label is one of ``labels`` as JPEG files for a person to review
    (the rejects of an inspection line), deleting the oldest beyond ``max_mb``.

    Files are named ``YYYYmmdd-HHMMSS-<frame>-<label>.jpg`` so they sort by time; files already
    in the folder count towards the cap, so a restarted service keeps honouring it. A write
    error (a full disk) is logged once and disables the sink; the loop goes on.

    Args:
        folder: where the frames go (created if missing).
        labels: reported labels whose frames are kept (``unknown`` included if listed).
        max_mb: size cap of the folder's JPEG files, in MiB.
        quality: JPEG quality.
    """

    needs_annotated = False
    needs_raw_frame = True  # saves the frame as the camera saw it, without the overlay

    def __init__(self, folder: PathLike, labels: Iterable[str], max_mb: float = 512, quality: int = 90) -> None:
        self.folder = Path(folder)
        self.labels = frozenset(labels)
        if not self.labels:
            raise EdgesightError("--review-dir needs at least one --review-label")
        if max_mb <= 0:
            raise EdgesightError(f"--review-max-mb must be positive, got {max_mb}")
        self.cap = int(max_mb * 2**20)
        self.quality = int(quality)
        self.saved = 0
        self.deleted = 0
        self.disabled = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            existing = sorted(p for p in self.folder.iterdir() if p.suffix == ".jpg" and p.is_file())
        except OSError as e:
            raise EdgesightError(f"{self.folder}: cannot use it for review frames ({e.strerror}); choose another --review-dir") from e
        self._files: Deque[Tuple[Path, int]] = deque((p, p.stat().st_size) for p in existing)
        self._total = sum(size for _, size in self._files)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        if self.disabled or result.label not in self.labels:
            return
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            logger.error("review: could not encode frame %d as JPEG", result.frame_index)
            return
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.wall_time))
        safe_label = "".join(c if c.isalnum() or c in "-_" else "_" for c in result.label)
        path = self.folder / f"{stamp}-{result.frame_index:08d}-{safe_label}.jpg"
        data = buf.tobytes()
        try:
            write_bytes(path, data)
        except OSError as e:
            self.disabled = True
            logger.error("review: cannot write %s (%s); no more review frames are saved", path, e.strerror or e)
            return
        self._files.append((path, len(data)))
        self._total += len(data)
        self.saved += 1
        while self._total > self.cap and len(self._files) > 1:
            old, size = self._files.popleft()
            try:
                old.unlink()
            except FileNotFoundError:
                pass  # someone already removed it while reviewing: the cap is what matters
            self._total -= size
            self.deleted += 1

    def close(self) -> None:
        if self.saved:
            logger.info("review: saved %d frames to %s (%d oldest deleted for the %d MiB cap)", self.saved, self.folder, self.deleted, self.cap // 2**20)
