"""systemd integration without dependencies: ``sd_notify`` over ``$NOTIFY_SOCKET``.

A unit with ``Type=notify`` and ``WatchdogSec=`` restarts the service when the loop stops
feeding the watchdog (a hung camera driver, a deadlock), which ``Restart=on-failure`` alone
cannot detect. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Optional

log = logging.getLogger("edgesight.systemd")


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING messages when run under systemd.

    The watchdog is fed at most every half of ``WatchdogSec`` (from ``$WATCHDOG_USEC``).
    """

    def __init__(self, environ=os.environ) -> None:
        addr = environ.get("NOTIFY_SOCKET", "")
        self._sock: Optional[socket.socket] = None
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and watchdog_for_us else 0.0
        self._last_feed = 0.0
        if addr:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as e:
                log.warning("cannot open the systemd notify socket %s: %s", addr, e)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode("utf-8"), self._addr)
        except OSError as e:
            log.warning("sd_notify(%s) failed: %s", message.split("=", 1)[0], e)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def feed(self, status: str = "") -> None:
        """Feed the watchdog if it is due (cheap to call every frame)."""
        if not self.watchdog_interval:
            return
        now = time.monotonic()
        if now - self._last_feed >= self.watchdog_interval:
            self._last_feed = now
            self.notify("WATCHDOG=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
