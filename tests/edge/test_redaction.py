"""A stream URL's password never reaches a file or the systemd status written by a run."""

import json
import socket

import pytest

from tests.conftest import run_cli
from tests.edge.test_sources import CaptureFactory

from edgesight.edge.sources import opencv
from edgesight.edge.urls import redact_url

pytestmark = pytest.mark.slow

URL = "rtsp://admin:s3cret-pw@10.0.0.5:554/stream1"


def test_redact_url_leaves_other_text_alone():
    assert redact_url(URL) == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert redact_url("/videos/a[1.mp4") == "/videos/a[1.mp4"
    assert opencv.redact_url is redact_url


def test_stream_password_is_not_written(color_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(opencv, "_open_capture", CaptureFactory({}))
    sock_path = str(tmp_path / "n.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    code, out, err = run_cli(["run", color_bundle, "--source", URL, "--max-frames", "5", "--stats-interval", "0.05",
                              "--stats-json", tmp_path / "s.json", "--status-file", tmp_path / "status.json"], capsys)
    assert code == 0, err
    listener.settimeout(0.2)
    messages = []
    try:
        while True:
            messages.append(listener.recv(4096).decode())
    except socket.timeout:
        pass
    listener.close()
    assert messages[0] == "READY=1\nSTATUS=classifying rtsp://admin:***@10.0.0.5:554/stream1"
    assert json.loads((tmp_path / "s.json").read_text())["source"] == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert json.loads((tmp_path / "status.json").read_text())["source"] == "rtsp://admin:***@10.0.0.5:554/stream1"
    for text in [out, err, *messages, (tmp_path / "s.json").read_text(), (tmp_path / "status.json").read_text()]:
        assert "s3cret" not in text
