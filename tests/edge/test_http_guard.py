"""The live view answers only its own names, asks for the token, and bounds its clients."""

import http.client
import logging
import socket
import time

import pytest

from edgesight.edge.errors import ConfigError
from edgesight.edge.loop.config import RunConfig
from edgesight.edge.sinks import HttpSink


def _get(sink, path="/status", host=None, headers=None):
    conn = http.client.HTTPConnection(*sink.address, timeout=5)
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    conn.request("GET", path, headers=h)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


@pytest.fixture
def sink_factory():
    made = []

    def make(**kw):
        s = HttpSink(port=0, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_foreign_host_headers_are_refused(sink_factory):
    s = sink_factory(allow_hosts=("pi.local",))
    port = s.address[1]
    assert _get(s, host=f"127.0.0.1:{port}")[0] == 200
    assert _get(s, host=f"localhost:{port}")[0] == 200
    assert _get(s, host=f"PI.local:{port}")[0] == 200
    status, body = _get(s, host=f"attacker.example:{port}")
    assert (status, body) == (403, b"host not allowed: open the view by its address, or allow this name with --http-allow-host\n")


def test_token_is_required_on_every_request(sink_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="edgesight.sinks")
    s = sink_factory(token="t0ps3cret")
    for path in ("/", "/status", "/stream.mjpg", "/status?token=wrong"):
        status, body = _get(s, path)
        assert status == 401 and body.startswith(b"token required: add ?token=TOKEN"), path
    assert _get(s, "/status?token=t0ps3cret")[0] == 200
    assert _get(s, "/status", headers={"Authorization": "Bearer t0ps3cret"})[0] == 200
    status, page = _get(s, "/?token=t0ps3cret")
    assert status == 200 and b'src="/stream.mjpg?token=t0ps3cret"' in page
    assert "protected by a token" in caplog.text
    assert "t0ps3cret" not in caplog.text


def test_startup_line_says_when_unprotected(caplog):
    caplog.set_level(logging.INFO, logger="edgesight.sinks")
    s = HttpSink("0.0.0.0", 0, insecure=True)
    try:
        assert f"http://0.0.0.0:{s.address[1]}/ (NOT protected: anyone who can reach" in caplog.text
        assert _get(s, host=f"192.168.1.7:{s.address[1]}")[0] == 200
        assert _get(s, host="evil.example")[0] == 403
    finally:
        s.close()


def test_non_loopback_needs_a_token_or_insecure():
    msg = ("--http 0.0.0.0: serving the camera to the network without a token; give --http-token "
           "(or EDGESIGHT_HTTP_TOKEN), or --http-insecure to serve it unprotected on purpose")
    with pytest.raises(ConfigError) as e:
        RunConfig(http="0.0.0.0:8080")
    assert str(e.value) == msg
    with pytest.raises(ConfigError):
        HttpSink("0.0.0.0", 0)
    assert RunConfig(http="0.0.0.0:8080", http_token="x").http_token == "x"
    assert RunConfig(http="0.0.0.0:8080", http_insecure=True).http_insecure
    assert RunConfig(http="8080", http_allow_host="pi.local").http_allow_host == ("pi.local",)


def test_cli_refuses_before_writing_anything(color_bundle, tmp_path, capsys, monkeypatch):
    from tests.conftest import run_cli

    monkeypatch.delenv("EDGESIGHT_HTTP_TOKEN", raising=False)
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic", "--http", "0.0.0.0:0",
                            "--jsonl", tmp_path / "e.jsonl"], capsys)
    assert code == 1 and "--http 0.0.0.0: serving the camera to the network without a token" in err
    assert not (tmp_path / "e.jsonl").exists()


def test_stream_clients_and_request_threads_are_capped(sink_factory):
    s = sink_factory(max_clients=1, max_threads=2)
    held = socket.create_connection(s.address)
    held.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    deadline = time.monotonic() + 5
    while s.hub.clients < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.hub.clients == 1
    status, body = _get(s, "/stream.mjpg")
    assert (status, body) == (503, b"too many stream clients; try again later\n")
    server = s._server

    def wait_busy(n):
        end = time.monotonic() + 5
        while server.busy != n and time.monotonic() < end:
            time.sleep(0.01)
        assert server.busy == n

    wait_busy(1)  # the refused stream request has finished; the held stream remains
    idle = socket.create_connection(s.address)  # holds the second request thread
    wait_busy(2)
    status, body = _get(s, "/status")
    assert (status, body) == (503, b"too many requests.\n")
    idle.close()
    held.close()
