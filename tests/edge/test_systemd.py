import os
import socket
import time

from edgesight.edge.loop.sdnotify import Notifier


def _listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_ready_watchdog_and_stopping_reach_the_socket(tmp_path):
    s, path = _listener(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert n.active and n.watchdog_interval == 0.1
    n.ready("running")
    assert s.recv(256) == b"READY=1\nSTATUS=running"
    n.feed()
    assert s.recv(256) == b"WATCHDOG=1"
    n.feed()  # not due yet: nothing sent
    time.sleep(0.12)
    n.feed("42 frames")
    assert s.recv(256) == b"WATCHDOG=1\nSTATUS=42 frames"
    n.stopping()
    assert s.recv(256) == b"STOPPING=1"
    n.close()
    s.close()


def test_outside_systemd_everything_is_a_no_op():
    n = Notifier({})
    assert not n.active and n.watchdog_interval == 0
    n.ready()
    n.feed()
    n.stopping()


def test_watchdog_for_another_pid_is_ignored(tmp_path):
    s, path = _listener(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval == 0
    s.close()
