"""Results published to an MQTT broker (paho-mqtt), and the ``mqtt://`` URL they go to."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Optional, Tuple
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..frames import Frame, Result
from ._common import ChangeFilter
from .base import Sink

logger = logging.getLogger("edgesight.sinks")


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

    Connecting, reconnecting (with back-off) and sending happen on paho's network thread;
    ``write`` never blocks. While disconnected, QoS 1/2 messages wait in paho's queue (up to
    ``max_queued``, then new ones are dropped and counted) and are sent after reconnecting;
    QoS 0 messages are at-most-once by definition and are dropped (and counted) while offline.

    Attributes:
        published: messages handed to paho (sent or queued).
        dropped: messages lost to a full queue or, at QoS 0, to a lost connection.
    """

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
        self._change = ChangeFilter()
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
