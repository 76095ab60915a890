"""Results published to an MQTT broker (paho-mqtt), and the ``mqtt://`` URL they go to."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..frames import Frame, Result
from ._common import ChangeFilter
from .base import Sink

logger = logging.getLogger("edgesight.sinks")
# A model installed by a deploy archive: PREFIX/releases/<16 hex digits>/model/...
RELEASE_RE = re.compile(r"/releases/([0-9a-f]{16})/")


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


class MqttSink(Sink):
    """Publishes each result's event as JSON to ``<prefix>/result`` on an MQTT broker.

    Topics:
        ``<prefix>/result``: ``Result.to_event()`` JSON, every result (or changes only).
        ``<prefix>/label``: the label as plain text, on the first result and each change.
        ``<prefix>/status``: ``online`` when connected, ``offline`` on close, and ``offline``
        as the last will, so the broker announces a device that vanished; always retained.
        ``<prefix>/drift``: the run's drift object as JSON (see :mod:`edgesight.edge.loop.drift`)
        with every statistics update and at once when its alert is raised or cleared; always
        retained, so a dashboard that subscribes later sees the drift state. Nothing is published
        there for a model without a baseline.
        ``<prefix>/alert``: ``{"kind": "drift", "alert": true or false, "drift": {...}}`` when the
        drift alert is raised and when it clears (not retained: an event).
        ``<prefix>/stats``: ``{"time", "frames", "fps", "dropped", "latency_p50", "label"}`` with
        every statistics update (``fps`` over the last interval); retained.
        ``<prefix>/info``: what runs there (``info``: release, model sha256, labels, host,
        version) on every connect; retained. ``edgesight fleet watch`` reads all of these.

    Connecting, reconnecting (with back-off) and sending happen on background threads;
    ``write`` never blocks. At QoS 1/2 every message goes through a bounded queue: while the
    broker is down it waits there (beyond ``max_queued`` the oldest is dropped and counted), and
    after reconnecting the queue is sent in order, once the messages paho still held from before
    the outage are acknowledged, so nothing published during the outage overtakes them. QoS 0
    messages are at-most-once by definition and are dropped (and counted) while offline.

    Attributes:
        published: messages handed to paho (sent, or resent by paho after a reconnect).
        dropped: messages lost to a full queue or, at QoS 0, to a lost connection.
    """

    #: QoS 1/2 messages handed to paho and not yet acknowledged, at most.
    WINDOW = 64
    #: write() only queues (its own bounded, counted queue, or paho's): the loop calls it directly.
    never_blocks = True

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
        max_queued: int = 10_000,
        info: Optional[Dict[str, Any]] = None,
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
            max_queued: QoS 1/2 messages kept while disconnected; beyond it the oldest is dropped.
            info: published (retained) to ``<prefix>/info`` on every connect (see :func:`device_info`).

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
        self.topic_drift = f"{self.target.prefix}/drift"
        self.topic_alert = f"{self.target.prefix}/alert"
        self.topic_stats = f"{self.target.prefix}/stats"
        self.topic_info = f"{self.target.prefix}/info"
        self.info = dict(info or {})
        self._drift_alert: Optional[bool] = None
        self._last_stats: Optional[Tuple[float, float]] = None
        self.published = 0
        self.dropped = 0
        self._change = ChangeFilter()
        self._connected = threading.Event()
        self._closing = False
        self._closed = False
        # One warning per outage, not one per reconnect attempt or per dropped message.
        self._outage_logged = False
        self._drop_logged = False
        # QoS 1/2: results waiting for the broker, the number handed to paho and not yet
        # acknowledged, the ids of the status messages (not counted), and whether paho still
        # holds messages from before a reconnect (then nothing new is handed over).
        self._cond = threading.Condition()
        self._queue: Deque[Tuple[str, str, bool]] = deque()
        self._outstanding = 0
        self._status_mids: Set[int] = set()
        self._resync = False

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
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(self.target.host, self.target.port, keepalive)
        client.loop_start()
        self._sender: Optional[threading.Thread] = None
        if qos:
            self._sender = threading.Thread(target=self._send_queued, name="edgesight-mqtt", daemon=True)
            self._sender.start()

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
        # Paho resends what it held only after this callback returns; the queue waits for it.
        self._status_mids.add(client.publish(self.topic_status, "online", qos=1, retain=True).mid)
        if self.info:
            self._status_mids.add(client.publish(self.topic_info, _json(self.info), qos=1, retain=True).mid)
        with self._cond:
            self._connected.set()
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            return
        with self._cond:
            self._outstanding -= 1
            self._cond.notify_all()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._warn_outage(
            "cannot reach the MQTT broker at %s; retrying in the background (QoS %d results %s)",
            self.target.display(), self.qos, "are queued" if self.qos else "are dropped until then",
        )

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._connected.clear()
            self._resync = self._outstanding > 0
        if not self._closing:
            self._warn_outage(
                "lost the connection to the MQTT broker at %s (%s); reconnecting in the background",
                self.target.display(), reason_code,
            )

    def _publish(self, topic: str, payload: str, retain: Optional[bool] = None) -> None:
        retain = self.retain if retain is None else retain
        if self.qos:
            with self._cond:
                if len(self._queue) >= self.max_queued:
                    self._queue.popleft()
                    self._count_drop(f"the queue of {self.max_queued} unsent messages is full; the oldest are dropped")
                self._queue.append((topic, payload, retain))
                self._cond.notify_all()
            return
        rc = self._client.publish(topic, payload, qos=0, retain=retain).rc
        if rc == self._mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.published += 1
        else:
            self._count_drop(f"paho: {self._mqtt.error_string(rc)}")

    def _count_drop(self, why: str) -> None:
        self.dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            logger.warning("MQTT results to %s are being dropped: %s", self.target.display(), why)

    def _ready(self) -> bool:
        if self._resync and self._outstanding <= 0:
            self._resync = False
        return self.connected and not self._resync and self._outstanding < self.WINDOW

    def _send_queued(self) -> None:
        """The only thread that hands QoS 1/2 messages to paho, in queue order."""
        codes = self._mqtt.MQTTErrorCode
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (self._queue and self._ready()))
                if self._closed:
                    return
                topic, payload, retain = self._queue.popleft()
                self._outstanding += 1
            # Outside the lock: paho calls on_publish while holding its own.
            rc = self._client.publish(topic, payload, qos=self.qos, retain=retain).rc
            # NO_CONN: the link dropped just now; paho keeps the message and resends it.
            if rc in (codes.MQTT_ERR_SUCCESS, codes.MQTT_ERR_NO_CONN):
                self.published += 1
                continue
            with self._cond:
                self._outstanding -= 1
            self._count_drop(f"paho: {self._mqtt.error_string(rc)}")

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every QoS 1/2 message is acknowledged."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and self._outstanding <= 0, timeout)

    def write(self, frame: Frame, result: Result, annotated: Optional[np.ndarray]) -> None:
        """Publish the result (and the label when it changed); never blocks."""
        changed = self._change.changed(result.label)
        if self.on_change_only and not changed:
            return
        self._publish(self.topic_result, json.dumps(result.to_event(), ensure_ascii=False, separators=(",", ":")))
        if changed:
            self._publish(self.topic_label, result.label)

    def update_stats(self, stats: Dict[str, Any]) -> None:
        """Publish a summary of the statistics and the drift object (both retained), and an alert
        when the drift state changed."""
        frames, seconds = float(stats.get("frames") or 0), float(stats.get("seconds") or 0)
        before, self._last_stats = self._last_stats, (frames, seconds)
        recent = (frames - before[0]) / (seconds - before[1]) if before and seconds > before[1] else stats.get("fps")
        self._publish(self.topic_stats, _json({
            "time": round(time.time(), 3), "frames": int(frames), "fps": round(float(recent or 0), 3),
            "dropped": stats.get("dropped", 0), "latency_p50": (stats.get("latency_ms") or {}).get("p50"),
            "label": stats.get("label")}), retain=True)
        drift = stats.get("drift")
        if not isinstance(drift, dict):
            return
        alert = bool(drift.get("alert"))
        if alert != bool(self._drift_alert) and (alert or self._drift_alert is not None):
            self._publish(self.topic_alert, _json({"kind": "drift", "alert": alert, "drift": drift}), retain=False)
        self._drift_alert = alert
        self._publish(self.topic_drift, _json(drift), retain=True)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, announce ``offline``, disconnect and stop the network thread.

        Args:
            timeout: seconds to wait for the broker to acknowledge the queued results and the
                ``offline`` message.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        if self.qos and self.connected and not self.flush(timeout):
            logger.warning("MQTT broker %s did not acknowledge every result within %.0f s",
                           self.target.display(), timeout)
        with self._cond:
            self._closed = True
            self._closing = True
            unsent = len(self._queue)
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(timeout)
        codes = self._mqtt.MQTTErrorCode
        if self.connected:
            info = self._client.publish(self.topic_status, "offline", qos=1, retain=True)
            if info.rc == codes.MQTT_ERR_SUCCESS:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        else:
            logger.warning(
                "closing the MQTT sink while disconnected from %s: %d unsent messages are discarded",
                self.target.display(), unsent + max(self._outstanding, 0),
            )
        self._client.disconnect()
        self._client.loop_stop()


def device_info(clf: Any) -> Dict[str, Any]:
    """What a device announces on ``<prefix>/info`` for ``clf`` (a
    :class:`~edgesight.edge.classifier.Classifier`): the deploy release its model comes from
    (``PREFIX/releases/<id>/...``, else null), the model's sha256, labels, host and version."""
    from .. import __version__
    from ..model.bundle import EDGETPU_SHA_KEY, SHA_KEY

    bundle = clf.bundle
    found = RELEASE_RE.search(str(Path(bundle.model_path).resolve()))
    sha = bundle.info.extra.get(EDGETPU_SHA_KEY if bundle.edgetpu else SHA_KEY) or None
    return {"release": found.group(1) if found else None, "model_sha256": sha, "labels": list(clf.labels),
            "host": socket.gethostname(), "version": __version__}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
