"""``edgesight fleet watch``: what every device of a fleet publishes over MQTT, as a live table.

Each device runs ``edgesight run ... --mqtt mqtt://BROKER/PREFIX/DEVICE``, so its MQTT sink
(:class:`~edgesight.edge.sinks.MqttSink`) publishes under ``PREFIX/DEVICE/``: ``result`` (every
result's JSON), ``label``, ``status`` (``online``/``offline``, the last will), ``stats`` (frame
rate and counts every statistics interval), ``info`` (release, model, labels), ``drift`` and
``alert``. The watcher subscribes to ``PREFIX/#`` and keeps, per device (the topic levels
between PREFIX and the last one):

- **state**: ``live``, or ``stale`` when nothing came from it for ``stale`` seconds (a device
  that hangs or lost its network says nothing; ``mqtt`` shows what the broker last said);
- **last seen**: the newest message's time (a retained message counts with the time it carries,
  so a device that died long ago is stale from the start);
- **fps**: from ``stats``, else the rate of ``result`` messages;
- **label** and **label rates**: the current label, and results per second per label over the
  last ``window`` seconds;
- **drift**: ``ALERT`` with the first reason while a drift alert is raised, else ``ok`` (blank
  for a model without a baseline);
- **release**: the deploy release from ``info``.

:class:`FleetState` is the pure bookkeeping (tested without a broker); :class:`FleetWatcher` feeds
it from paho's network thread.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..errors import ConfigError

log = logging.getLogger("edgesight.fleet")

STALE_S = 30.0
WINDOW_S = 60.0
KINDS = ("result", "label", "status", "stats", "info", "drift", "alert")


@dataclass
class Device:
    """What is known of one device."""

    name: str
    last_seen: float = 0.0
    mqtt: str = ""
    fps: Optional[float] = None
    fps_at: float = 0.0
    label: Optional[str] = None
    score: Optional[float] = None
    release: Optional[str] = None
    drift: Optional[Dict[str, Any]] = None
    results: Deque[Tuple[float, str]] = field(default_factory=deque)
    messages: int = 0


def _time_of(payload: Any) -> Optional[float]:
    value = payload.get("time") if isinstance(payload, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class FleetState:
    """Devices and their figures, from MQTT messages under ``prefix``.

    Args:
        prefix: the topic prefix the devices publish under (``PREFIX`` of ``PREFIX/DEVICE/...``).
        stale: seconds without a message after which a device is ``stale``.
        window: seconds of results the label rates (and the fps without ``stats``) cover.
    """

    def __init__(self, prefix: str, stale: float = STALE_S, window: float = WINDOW_S) -> None:
        if stale <= 0 or window <= 0:
            raise ConfigError(f"--stale and --window must be above 0 seconds, got {stale:g} and {window:g}")
        self.prefix = prefix.strip("/")
        self.stale = float(stale)
        self.window = float(window)
        self.devices: Dict[str, Device] = {}
        self.messages = 0
        self.ignored = 0
        self._lock = threading.Lock()

    def _split(self, topic: str) -> Optional[Tuple[str, str]]:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        name, _, kind = topic[len(head):].rpartition("/")
        return (name, kind) if name and kind in KINDS else None

    def ingest(self, topic: str, payload: bytes, retained: bool = False, now: Optional[float] = None) -> bool:
        """Take one message; returns False for a topic or payload it does not understand."""
        now = time.time() if now is None else now
        where = self._split(topic)
        if where is None:
            with self._lock:
                self.ignored += 1
            return False
        name, kind = where
        text = payload.decode("utf-8", "replace")
        data: Any = text
        if kind not in ("label", "status"):
            try:
                data = json.loads(text)
            except ValueError:
                with self._lock:
                    self.ignored += 1
                return False
        with self._lock:
            self.messages += 1
            dev = self.devices.get(name)
            if dev is None:
                dev = self.devices[name] = Device(name)
            dev.messages += 1
            # A retained message may be old: it counts with the time it carries, if any.
            seen = min(_time_of(data) or 0.0, now) if retained else now
            dev.last_seen = max(dev.last_seen, seen)
            self._apply(dev, kind, data, retained, now)
        return True

    def _apply(self, dev: Device, kind: str, data: Any, retained: bool, now: float) -> None:
        if kind == "status":
            dev.mqtt = str(data).strip()
        elif kind == "label":
            dev.label = str(data)
        elif kind == "result" and isinstance(data, dict):
            dev.label = str(data.get("label", dev.label))
            score = data.get("score")
            dev.score = float(score) if isinstance(score, (int, float)) else dev.score
            if not retained:
                dev.results.append((now, dev.label))
            if isinstance(data.get("drift"), dict):
                dev.drift = data["drift"]
        elif kind == "stats" and isinstance(data, dict):
            fps = data.get("fps")
            if isinstance(fps, (int, float)):
                dev.fps, dev.fps_at = float(fps), _time_of(data) or now
            if data.get("label") is not None and dev.label is None:
                dev.label = str(data["label"])
            if isinstance(data.get("drift"), dict):
                dev.drift = data["drift"]
        elif kind == "info" and isinstance(data, dict):
            dev.release = data.get("release") or dev.release
        elif kind == "drift" and isinstance(data, dict):
            dev.drift = data
        elif kind == "alert" and isinstance(data, dict) and isinstance(data.get("drift"), dict):
            dev.drift = data["drift"]
        while dev.results and dev.results[0][0] < now - self.window:
            dev.results.popleft()

    def rows(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """One row per device, sorted by name: the table's columns as values."""
        now = time.time() if now is None else now
        with self._lock:
            return [self._row(d, now) for _, d in sorted(self.devices.items())]

    def _row(self, dev: Device, now: float) -> Dict[str, Any]:
        while dev.results and dev.results[0][0] < now - self.window:
            dev.results.popleft()
        # Results per second over the window, or since the first one for a device just seen.
        span = max(1.0, min(self.window, now - dev.results[0][0])) if dev.results else self.window
        counts: Dict[str, int] = {}
        for _, label in dev.results:
            counts[label] = counts.get(label, 0) + 1
        rates = {k: round(v / span, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
        fresh_stats = dev.fps is not None and now - dev.fps_at <= self.stale
        fps = dev.fps if fresh_stats else (round(len(dev.results) / span, 3) if dev.results else None)
        age = max(0.0, now - dev.last_seen) if dev.last_seen else None
        drift = dev.drift or {}
        alert = bool(drift.get("alert"))
        reasons = drift.get("reasons") or []
        return {
            "device": dev.name,
            "state": "live" if age is not None and age <= self.stale else "stale",
            "mqtt": dev.mqtt or None,
            "last_seen": round(dev.last_seen, 3) if dev.last_seen else None,
            "age": round(age, 1) if age is not None else None,
            "fps": round(fps, 2) if fps is not None else None,
            "label": dev.label,
            "score": dev.score,
            "rates": rates,
            "drift": ("ALERT" + (f": {reasons[0]}" if reasons else "")) if alert else ("ok" if dev.drift else None),
            "drift_alert": alert,
            "release": dev.release,
        }

    def snapshot(self, now: Optional[float] = None) -> Dict[str, Any]:
        """The whole view as JSON-able data (the page's ``/fleet.json``)."""
        now = time.time() if now is None else now
        rows = self.rows(now)
        return {"prefix": self.prefix, "time": round(now, 3), "stale_after": self.stale, "window": self.window,
                "devices": rows, "live": sum(r["state"] == "live" for r in rows), "stale": sum(r["state"] == "stale" for r in rows),
                "alerts": sum(r["drift_alert"] for r in rows), "messages": self.messages, "ignored": self.ignored}


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.0f} h ago"


def format_table(snapshot: Dict[str, Any], width: int = 0) -> str:
    """The terminal table of a :meth:`FleetState.snapshot`."""
    head = ("device", "state", "mqtt", "last seen", "fps", "label", "label rates /s", "drift", "release")
    rows = [head]
    for r in snapshot["devices"]:
        rates = ", ".join(f"{k} {v:g}" for k, v in list(r["rates"].items())[:3])
        rows.append((r["device"], r["state"], r["mqtt"] or "-", _age(r["age"]), "-" if r["fps"] is None else f"{r['fps']:.1f}",
                     r["label"] or "-", rates or "-", r["drift"] or "-", (r["release"] or "-")[:16]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if width:
        lines = [line[:width] for line in lines]
    summary = (f"{snapshot['prefix']}/#: {len(snapshot['devices'])} devices, {snapshot['live']} live, {snapshot['stale']} stale "
               f"(no message for {snapshot['stale_after']:g} s), {snapshot['alerts']} drift alerts; {snapshot['messages']} messages")
    return "\n".join([summary, *lines]) + "\n"


class FleetWatcher:
    """Subscribes to ``PREFIX/#`` of an ``mqtt://`` URL and feeds a :class:`FleetState`.

    Args:
        url: ``mqtt://[user:pass@]host[:port]/PREFIX`` (``mqtts://`` for TLS), as ``run --mqtt``
            takes, without the device level.
        stale, window: see :class:`FleetState`.

    Raises:
        ConfigError: a bad URL.
        MissingDependencyError: paho-mqtt 2.x is not installed.
    """

    def __init__(self, url: str, stale: float = STALE_S, window: float = WINDOW_S, client_id: Optional[str] = None) -> None:
        from ..sinks.mqtt import _import_paho, parse_mqtt_url

        self.target = parse_mqtt_url(url)
        self.state = FleetState(self.target.prefix, stale, window)
        mqtt = _import_paho()
        self._connected = threading.Event()
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"edgesight-watch-{socket.gethostname()}-{os.getpid()}")
        if self.target.username:
            self._client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._warned = False
        self._closing = False
        self._client.connect_async(self.target.host, self.target.port, 30)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if not self._warned:
                self._warned = True
                log.warning("MQTT broker %s refused the connection (%s); check the user name and password in the URL",
                            self.target.display(), reason_code)
            return
        self._warned = False
        client.subscribe(f"{self.target.prefix}/#", qos=0)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._warned and not self._closing:
            self._warned = True
            log.warning("lost the connection to the MQTT broker at %s (%s); reconnecting", self.target.display(), reason_code)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.state.ingest(msg.topic, msg.payload, bool(msg.retain))

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the subscription; returns whether it is made."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def snapshot(self) -> Dict[str, Any]:
        snap = self.state.snapshot()
        snap["broker"] = self.target.display()
        snap["connected"] = self.connected
        return snap

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
