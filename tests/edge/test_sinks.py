"""Result sinks and the overlay: real files, a real HTTP server, a real mosquitto broker."""

from __future__ import annotations

import errno
import getpass
import http.client
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import ConfigError, EdgesightError, MissingDependencyError
from edgesight.edge.frames import Frame, Result
from edgesight.edge.sinks.overlay import draw_overlay
from edgesight.edge.sinks import (
    AsyncSink,
    DisplaySink,
    GpioSink,
    HttpSink,
    JsonlSink,
    MqttSink,
    Sink,
    VideoSink,
    parse_mqtt_url,
)


def make_result(label: str = "cat", score: float = 0.875, index: int = 0) -> Result:
    return Result(
        frame_index=index,
        timestamp=100.0 + index,
        wall_time=1_700_000_000.0 + index,
        label=label,
        score=score,
        top_k=[(label, score), ("other", 1.0 - score)],
        latency_ms=12.5,
        stages_ms={"invoke": 8.0},
    )


def make_frame(index: int = 0, width: int = 160, height: int = 120, value: int = 90) -> Frame:
    image = np.full((height, width, 3), value, np.uint8)
    image[:, : width // 2] = (30, 160, 220)
    return Frame(image=image, index=index, timestamp=100.0 + index, wall_time=1_700_000_000.0 + index)


def event_line(result: Result) -> str:
    return json.dumps(result.to_event(), ensure_ascii=False, separators=(",", ":"))


def wait_until(predicate, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---------------------------------------------------------------------------------- overlay


def test_overlay_draws_label_box_and_roi_on_a_copy():
    image = np.full((240, 320, 3), 200, np.uint8)
    out = draw_overlay(image, make_result("cat", 0.875), fps=12.34, roi=(100, 60, 80, 80))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 200).all(), "the input must not be modified"
    label_area = out[4:24, 4:44].astype(int)
    assert (label_area != 200).any(axis=2).all(), "the backing box covers the label area"
    assert label_area.min() < 100, "the backing box darkens a light scene"
    assert label_area.max() > 240, "white text on the box"
    assert (out[60, 140] != 200).any(), "ROI outline drawn"
    assert (out[100, 140] == 200).all(), "ROI interior untouched"
    assert (out[200:, 250:] == 200).all(), "rest of the frame untouched"


def test_overlay_text_reads_on_dark_frames_and_scales_with_size():
    dark = draw_overlay(np.zeros((240, 320, 3), np.uint8), make_result(), fps=30)
    assert dark[:40, :120].max() > 240

    def changed_extent(h: int, w: int) -> tuple:
        img = np.full((h, w, 3), 128, np.uint8)
        ys, xs = np.nonzero((draw_overlay(img, make_result(), fps=30) != 128).any(axis=2))
        return ys.max(), xs.max()

    small, large = changed_extent(240, 320), changed_extent(720, 1280)
    assert large[0] > 2 * small[0] and large[1] > 2 * small[1]


def test_overlay_box_keeps_its_size_while_score_and_fps_change():
    def box_width(score: float, fps: float) -> int:
        img = np.full((240, 320, 3), 200, np.uint8)
        out = draw_overlay(img, make_result("cat", score), fps=fps)
        darkened = (out[:, :, 0] < 100).any(axis=0)  # columns under the backing box
        return int(np.nonzero(darkened)[0].max())

    widths = {box_width(s, f) for s, f in ((0.1, 9.5), (0.875, 12.34), (0.999, 88.8), (0.5, 30.0))}
    assert len(widths) == 1
    assert box_width(0.5, 30.0) < box_width(0.5, 130.0), "a longer text gets a wider box"


def test_overlay_rejects_non_bgr_images_and_empty_roi():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_overlay(np.zeros((10, 10), np.uint8), make_result())
    with pytest.raises(ValueError, match="positive"):
        draw_overlay(np.zeros((10, 10, 3), np.uint8), make_result(), roi=(0, 0, 0, 5))


# ------------------------------------------------------------------------------------ JSONL


def test_jsonl_writes_exact_lines_flushed_per_line_and_truncates(tmp_path):
    path = tmp_path / "logs" / "results.jsonl"
    path.parent.mkdir()
    path.write_text("stale line from an earlier run\n")
    sink = JsonlSink(path)
    results = [make_result("cat", 0.9, 0), make_result("dög", 0.6, 1), make_result("cat", 0.7, 2)]
    sink.write(make_frame(0), results[0], None)
    # Readable before close: what `tail -f` relies on.
    assert path.read_text(encoding="utf-8") == event_line(results[0]) + "\n"
    for i, r in enumerate(results[1:], 1):
        sink.write(make_frame(i), r, None)
    sink.close()
    assert path.read_text(encoding="utf-8").splitlines() == [event_line(r) for r in results]
    assert sink.written == 3 and not sink.disabled


def test_jsonl_on_change_only_keeps_first_and_changes(tmp_path):
    path = tmp_path / "changes.jsonl"
    sink = JsonlSink(path, on_change_only=True)
    labels = ["a", "a", "b", "b", "b", "a"]
    for i, label in enumerate(labels):
        sink.write(make_frame(i), make_result(label, index=i), None)
    sink.close()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["label"], e["frame"]) for e in events] == [("a", 0), ("b", 2), ("a", 5)]


@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="/dev/full is not writable here")
def test_jsonl_disk_full_logs_once_and_disables(caplog):
    sink = JsonlSink("/dev/full")
    with caplog.at_level("ERROR", logger="edgesight.sinks"):
        for i in range(3):
            sink.write(make_frame(i), make_result(index=i), None)
    sink.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "/dev/full" in errors[0].getMessage() and "disk is full" in errors[0].getMessage()
    assert sink.disabled and sink.written == 0 and sink.error.errno == errno.ENOSPC


def test_jsonl_disk_full_on_a_stream_object(monkeypatch, caplog):
    class FullStream:
        calls = 0

        def write(self, text):
            FullStream.calls += 1
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise AssertionError("not reached: write already failed")

    monkeypatch.setattr(sys, "stdout", FullStream())
    sink = JsonlSink("-")
    with caplog.at_level("ERROR", logger="edgesight.sinks"):
        for i in range(4):
            sink.write(make_frame(i), make_result(index=i), None)
    sink.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "standard output" in errors[0] and "disk is full" in errors[0]
    assert FullStream.calls == 1 and sink.disabled


def test_jsonl_unwritable_path_says_so(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(EdgesightError, match="cannot create the JSONL log .*choose a writable path"):
        JsonlSink(blocker / "results.jsonl")


# ------------------------------------------------------------------------------------ video


def read_video(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot read back {path}"
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


@pytest.mark.parametrize("name", ["out.avi", "out.mp4"])
def test_video_sink_writes_a_readable_video(tmp_path, name):
    path = tmp_path / "videos" / name
    sink = VideoSink(path, fps=15, size=None)
    assert sink.needs_annotated
    for i in range(12):
        frame = make_frame(i, 160, 120)
        sink.write(frame, make_result(index=i), draw_overlay(frame.image, make_result(index=i)))
    sink.close()
    frames = read_video(path)
    assert len(frames) == 12
    assert all(f.shape == (120, 160, 3) for f in frames)


def test_video_sink_resizes_other_sizes_and_draws_when_not_annotated(tmp_path):
    path = tmp_path / "mixed.avi"
    sink = VideoSink(path, fps=10, size=(96, 64))
    sink.write(make_frame(0, 160, 120), make_result(), None)
    sink.write(make_frame(1, 50, 200), make_result(), None)
    sink.close()
    frames = read_video(path)
    assert [f.shape for f in frames] == [(64, 96, 3), (64, 96, 3)]
    plain = cv2.resize(make_frame(0, 160, 120).image, (96, 64), interpolation=cv2.INTER_AREA)
    assert frames[0][:8, :30].mean() < 0.75 * plain[:8, :30].mean(), "the overlay is drawn when none is given"


def test_video_sink_rejects_unknown_extensions_and_bad_fps(tmp_path):
    with pytest.raises(ConfigError, match=r"\.mp4.*\.avi"):
        VideoSink(tmp_path / "out.mkv", fps=10)
    with pytest.raises(ConfigError, match="fps"):
        VideoSink(tmp_path / "out.avi", fps=0)


# ---------------------------------------------------------------------------------- display

HEADLESS_MESSAGE = (
    "the window needs an OpenCV build with GUI support, but the installed OpenCV is headless "
    "(cv2.imshow: the function is not implemented). Install a GUI build: "
    "pip uninstall -y opencv-python-headless && pip install opencv-python "
    "(on Raspberry Pi OS: sudo apt install python3-opencv, and use a venv created with "
    "--system-site-packages), or watch the stream in a browser instead with --http 127.0.0.1:8080, "
    "which works everywhere."
)


def headless_imshow(name, image):
    raise cv2.error(
        "OpenCV(5.0.0) /io/opencv/modules/highgui/src/window.cpp:1301: error: (-2:Unspecified error) "
        "The function is not implemented. Rebuild the library with Windows, GTK+ 2.x or Cocoa support. "
        "If you are on Ubuntu or Debian, install libgtk2.0-dev and pkg-config, then re-run cmake or "
        "configure script in function 'cvShowImage'"
    )


def test_display_sink_on_headless_opencv_gives_the_exact_help(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "imshow", headless_imshow)
    with pytest.raises(EdgesightError) as info:
        DisplaySink("edgesight")
    assert str(info.value) == HEADLESS_MESSAGE


def test_display_sink_trusts_build_info_without_probing(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("imshow must not be probed on a headless build"))
    with pytest.raises(EdgesightError) as info:
        DisplaySink()
    assert str(info.value) == HEADLESS_MESSAGE


def test_display_sink_without_a_display_suggests_http(monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:  QT5\n")
    monkeypatch.setattr(cv2, "imshow", lambda *a: pytest.fail("a GUI backend aborts without a display"))
    with pytest.raises(EdgesightError, match="DISPLAY.*--http 127.0.0.1:8080"):
        DisplaySink()


def test_display_sink_shows_frames_and_q_requests_quit(monkeypatch):
    shown, keys, destroyed = [], iter([-1, -1, ord("q") | 0x100000]), []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "imshow", lambda name, img: shown.append((name, img.shape)))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys, -1))
    monkeypatch.setattr(cv2, "destroyWindow", destroyed.append)
    sink = DisplaySink("cam")
    frame = make_frame()
    sink.write(frame, make_result(), draw_overlay(frame.image, make_result()))
    assert not sink.quit_requested
    sink.write(frame, make_result(), None)
    assert sink.quit_requested
    sink.close()
    assert shown[1:] == [("cam", (120, 160, 3))] * 2 and destroyed == ["cam"]


# ------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_sink():
    sink = HttpSink(port=0)
    yield sink
    sink.close()


def http_get(sink: HttpSink, path: str):
    conn = http.client.HTTPConnection(*sink.address, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type"), resp.read()


def read_part(resp) -> bytes:
    """One multipart/x-mixed-replace part's JPEG bytes."""
    line = resp.readline()
    while line.strip() == b"":
        line = resp.readline()
    assert line.strip() == b"--frame"
    headers = {}
    while True:
        line = resp.readline().strip()
        if not line:
            break
        key, value = line.decode().split(":", 1)
        headers[key.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    n = int(headers["content-length"])
    data = b""
    while len(data) < n:
        chunk = resp.read(n - len(data))
        assert chunk, "stream ended inside a part"
        data += chunk
    return data


def test_http_binds_localhost_and_serves_status_page_and_404(http_sink):
    assert http_sink.address[0] == "127.0.0.1" and http_sink.address[1] > 0
    status, ctype, body = http_get(http_sink, "/status")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["result"] is None

    result = make_result("dog", 0.75, 7)
    http_sink.write(make_frame(7), result, None)
    http_sink.update_stats({"fps": 9.5, "dropped": 2})
    status, _, body = http_get(http_sink, "/status")
    assert json.loads(body) == {"result": result.to_event(), "stats": {"fps": 9.5, "dropped": 2}, "latest": result.to_event(), "clients": 0,
                                "drift": None}
    # a snapshot keeps its own result; the newest frame's goes under "latest", which the page shows
    http_sink.update_stats({"frames": 8, "result": result.to_event()})
    newer = make_result("cat", 0.9, 8)
    http_sink.write(make_frame(8), newer, None)
    snap = json.loads(http_get(http_sink, "/status")[2])
    assert snap["result"]["frame"] == 7 and snap["stats"] == {"frames": 8} and snap["latest"]["label"] == "cat"

    status, ctype, body = http_get(http_sink, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"/stream.mjpg" in body and b'src="/static/live.js"' in body

    status, _, _ = http_get(http_sink, "/favicon.ico")
    assert status == 404
    with pytest.raises(TypeError):
        http_sink.update_stats({"bad": object()})


def test_http_mjpeg_stream_parts_decode_to_the_frame_size(http_sink):
    first = make_frame(0, 160, 120)
    http_sink.write(first, make_result(), draw_overlay(first.image, make_result()))
    conn = http.client.HTTPConnection(*http_sink.address, timeout=5)
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"

    img = cv2.imdecode(np.frombuffer(read_part(resp), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (120, 160, 3)
    # The client waits for the next frame rather than resending the same one.
    http_sink.write(make_frame(1, 200, 100), make_result(index=1), None)
    img = cv2.imdecode(np.frombuffer(read_part(resp), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (100, 200, 3)
    assert http_sink.hub.clients == 1

    # A client that goes away is cleaned up once writing to it fails (within a frame or two).
    resp.close()
    conn.close()

    def next_frame_then_clients() -> int:
        http_sink.write(make_frame(2), make_result(index=2), None)
        return http_sink.hub.clients

    assert wait_until(lambda: next_frame_then_clients() == 0, 3.0, 0.05)


def test_http_close_is_prompt_with_a_client_streaming():
    sink = HttpSink(port=0)
    sink.write(make_frame(), make_result(), None)
    conn = http.client.HTTPConnection(*sink.address, timeout=5)
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    read_part(resp)
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 1.5
    assert resp.read().strip() == b"", "the stream ends after close"
    conn.close()


def test_http_port_in_use_says_choose_another(http_sink):
    with pytest.raises(EdgesightError, match="choose another port"):
        HttpSink(port=http_sink.address[1])


# ------------------------------------------------------------------------------------- MQTT

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
# CI installs the broker (.ci/run), so there a missing binary is a failure, not a skip.
needs_broker = pytest.mark.skipif(MOSQUITTO is None and not os.environ.get("CI"), reason="the mosquitto broker binary is not installed (apt install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto on a free localhost port, with persistence so sessions survive a restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "data").mkdir()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir / 'data'}/\n"
            # Run as root, mosquitto switches to user "mosquitto", which cannot write here.
            f"user {getpass.getuser()}\n"
        )
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.workdir / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    def __init__(self, port: int, topic: str, client_id: str = "", clean: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.messages: "queue.Queue" = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscription not acknowledged"

    def take(self, n: int, timeout: float = 5.0, topic: Optional[str] = None) -> list:
        got, deadline = [], time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if topic is None or msg.topic == topic:
                got.append(msg)
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@needs_broker
@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_publishes_results_labels_and_status(broker, qos):
    sub = Subscriber(broker.port, "line1/cam/#")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/line1/cam", qos=qos)
    try:
        assert sink.wait_connected(5)
        results = [make_result(label, index=i) for i, label in enumerate(["ok", "ok", "reject"])]
        for i, r in enumerate(results):
            sink.write(make_frame(i), r, None)
        msgs = sub.take(6)
        by_topic = {}
        for m in msgs:
            by_topic.setdefault(m.topic, []).append(m)
        assert [m.payload.decode() for m in by_topic["line1/cam/status"]] == ["online"]
        assert [json.loads(m.payload) for m in by_topic["line1/cam/result"]] == [r.to_event() for r in results]
        assert [m.payload.decode() for m in by_topic["line1/cam/label"]] == ["ok", "reject"]
        assert {m.qos for m in by_topic["line1/cam/result"] + by_topic["line1/cam/label"]} == {qos}
        assert sink.published == 5 and sink.dropped == 0
    finally:
        sink.close()
    assert [m.payload for m in sub.take(1, topic="line1/cam/status")] == [b"offline"]
    sub.close()


@needs_broker
def test_mqtt_retain_gives_late_subscribers_the_latest_label(broker):
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/qc", qos=1, retain=True, on_change_only=True)
    assert sink.wait_connected(5)
    for i, label in enumerate(["good", "good", "good", "defect"]):
        sink.write(make_frame(i), make_result(label, index=i), None)
    sink.close()
    assert sink.published == 4, "on_change_only: 2 results and 2 labels"

    late = Subscriber(broker.port, "qc/#")
    msgs = {m.topic: m for m in late.take(3)}
    late.close()
    assert msgs["qc/label"].payload == b"defect" and msgs["qc/label"].retain
    assert json.loads(msgs["qc/result"].payload)["label"] == "defect" and msgs["qc/result"].retain
    assert msgs["qc/status"].payload == b"offline" and msgs["qc/status"].retain


@needs_broker
def test_mqtt_queues_while_broker_is_down_and_delivers_after_reconnect(broker):
    # A persistent session keeps the subscription on the broker across the restart, so the
    # queued results are delivered whichever client reconnects first.
    sub = Subscriber(broker.port, "cam/result", client_id="edgesight-test-sub", clean=False)
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/cam", qos=1, reconnect_delay=(1, 1))
    try:
        assert sink.wait_connected(5)
        sink.write(make_frame(0), make_result("before", index=0), None)
        assert [json.loads(m.payload)["label"] for m in sub.take(1)] == ["before"]

        broker.stop()
        assert wait_until(lambda: not sink.connected, 5)
        t0 = time.monotonic()
        for i, label in enumerate(["q1", "q2", "q3"], 1):
            sink.write(make_frame(i), make_result(label, index=i), None)
        assert time.monotonic() - t0 < 0.2, "publishing while disconnected must not block"
        assert sink.published == 2 and sink.dropped == 0  # the 6 results and label changes wait in the queue

        broker.start()
        assert sink.wait_connected(10)
        labels = [json.loads(m.payload)["label"] for m in sub.take(3, timeout=10)]
        assert labels == ["q1", "q2", "q3"]
        assert sink.flush(5) and sink.published == 8
    finally:
        sink.close()
        sub.close()


def test_mqtt_without_broker_counts_qos0_drops_and_bounds_the_queue(caplog):
    port = free_port()
    with caplog.at_level("WARNING", logger="edgesight.sinks"):
        lossy = MqttSink(f"mqtt://127.0.0.1:{port}/x", qos=0)
        queued = MqttSink(f"mqtt://127.0.0.1:{port}/y", qos=1, max_queued=4)
        t0 = time.monotonic()
        for i in range(3):
            lossy.write(make_frame(i), make_result(index=i), None)
            queued.write(make_frame(i), make_result(f"l{i}", index=i), None)
        assert time.monotonic() - t0 < 0.2
        lossy.close()
        queued.close()
    assert (lossy.published, lossy.dropped) == (0, 4)  # 3 results + the first label
    assert (queued.published, queued.dropped) == (0, 2)  # 3 results + 3 labels, queue of 4: the oldest 2 go
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "queue of 4 unsent messages is full; the oldest are dropped" in text and f"mqtt://127.0.0.1:{port}/y" in text


def test_parse_mqtt_url():
    t = parse_mqtt_url("mqtts://u%40x:p%3Aw@broker.local/factory/line1/")
    assert (t.host, t.port, t.tls, t.username, t.password, t.prefix) == (
        "broker.local", 8883, True, "u@x", "p:w", "factory/line1")
    assert "p:w" not in t.display() and "u@x@broker.local:8883" in t.display()
    t = parse_mqtt_url("mqtt://10.0.0.5")
    assert (t.port, t.tls, t.username, t.prefix) == (1883, False, None, "edgesight")
    assert parse_mqtt_url("mqtt://h:1884/a").port == 1884
    for bad, match in [("http://h/a", "mqtt:// or mqtts://"), ("mqtt:///a", "no broker host"),
                       ("mqtt://h:99999/a", "invalid port"), ("mqtt://h/a/+/b", "may not contain")]:
        with pytest.raises(ConfigError, match=match):
            parse_mqtt_url(bad)
    with pytest.raises(ConfigError, match="QoS"):
        MqttSink("mqtt://h/a", qos=3)


def test_mqtt_missing_paho_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'paho-mqtt>=2.0'"):
        MqttSink("mqtt://127.0.0.1/x")


# ------------------------------------------------------------------------------------- GPIO


class FakeOutput:
    """Records gpiozero DigitalOutputDevice calls. A pulse lasts until the test sets ``release``:
    on a thread of its own with ``background=True`` (gpiozero's blink thread), else in the call."""

    def __init__(self, pin, active_high):
        self.pin, self.active_high = pin, active_high
        self.blinks, self.events = [], []
        self.release = threading.Event()
        self.pulse_threads = []

    def blink(self, on_time=1, off_time=1, n=None, background=True):
        self.blinks.append((on_time, off_time, n, background))
        if background:
            thread = threading.Thread(target=self._pulse, daemon=True)
            thread.start()
            self.pulse_threads.append(thread)
        else:
            self._pulse()

    def _pulse(self):
        # Bounded, so a sink that waited for its pulse fails the test instead of hanging it.
        self.release.wait(5)
        self.events.append("pulse ended")

    def off(self):
        self.events.append("off")

    def close(self):
        self.events.append("close")


@pytest.mark.hardware
def test_gpio_pulses_only_for_configured_labels_without_blocking():
    devices = []
    sink = GpioSink(17, ["reject", "defect"], pulse_ms=200, active_high=False,
                    device_factory=lambda pin, high: devices.append(FakeOutput(pin, high)) or devices[-1])
    (device,) = devices
    assert (device.pin, device.active_high) == (17, False)
    for i, label in enumerate(["ok", "reject", "ok", "defect", "unknown"]):
        sink.write(make_frame(i), make_result(label, index=i), None)
    # No pulse could end before the test released it, so every write returned mid-pulse.
    device.events.append("writes returned")
    device.release.set()
    for thread in device.pulse_threads:
        thread.join(5)
    assert device.events == ["writes returned", "pulse ended", "pulse ended"]
    assert device.blinks == [(0.2, 0, 1, True)] * 2 and sink.pulses == 2
    sink.close()
    assert device.events[-2:] == ["off", "close"]


@pytest.mark.hardware
def test_gpio_with_gpiozero_mock_pins_pulses_in_the_background():
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    previous = gpiozero.Device.pin_factory
    gpiozero.Device.pin_factory = MockFactory()
    try:
        sink = GpioSink("GPIO17", "reject", pulse_ms=150)
        pin = gpiozero.Device.pin_factory.pin(17)
        sink.write(make_frame(), make_result("ok"), None)
        assert not pin.state
        t0 = time.monotonic()
        sink.write(make_frame(), make_result("reject"), None)
        assert time.monotonic() - t0 < 0.1, "the 150 ms pulse runs in the background"
        assert wait_until(lambda: [s.state for s in pin.states] == [False, True, False], 2.0)
        # MockPin timestamps are the time since the previous change: the "off" entry's is the pulse.
        assert pin.states[2].timestamp >= 0.149
        sink.close()
        with pytest.raises(EdgesightError, match="cannot use GPIO pin GPIO99"):
            GpioSink("GPIO99", ["reject"])
    finally:
        gpiozero.Device.pin_factory.close()
        gpiozero.Device.pin_factory = previous


@pytest.mark.hardware
def test_gpio_missing_gpiozero_names_pip_and_apt(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(MissingDependencyError) as info:
        GpioSink(17, ["reject"])
    assert "pip install gpiozero" in str(info.value) and "python3-gpiozero" in str(info.value)
    with pytest.raises(ConfigError):
        GpioSink(17, [], device_factory=FakeOutput)


@pytest.mark.hardware
def test_gpio_off_a_pi_is_one_error_without_gpiozero_fallback_warnings(monkeypatch, caplog):
    gpiozero = pytest.importorskip("gpiozero")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(gpiozero.Device, "pin_factory", None)
    import warnings

    with warnings.catch_warnings(record=True) as seen, caplog.at_level("DEBUG", logger="edgesight"):
        warnings.simplefilter("always")
        with pytest.raises(EdgesightError, match=r"^cannot use GPIO pin 17: .*this is a Raspberry Pi"):
            GpioSink(17, ["reject"])
    assert [w for w in seen if "gpiozero" in type(w.message).__module__] == []
    # what gpiozero tried is still there for -v
    assert any("gpiozero: Falling back from" in r.getMessage() for r in caplog.records)


def test_the_base_class_declares_every_ability_with_a_default():
    class Bare(Sink):
        def write(self, frame, result, annotated):
            pass

    s = Bare()
    assert (s.needs_annotated, s.needs_raw_frame, s.lossless, s.dropped, s.quit_requested, s.address) == (False, False, False, 0, False, None)
    assert s.inner is s
    s.update_stats({"frames": 1})
    s.close()
    with pytest.raises(TypeError):
        Sink()  # write is abstract


def test_async_sink_declares_the_inner_sinks_abilities(http_sink):
    sink = AsyncSink(http_sink)
    try:
        assert sink.needs_annotated and not sink.needs_raw_frame and not sink.quit_requested
        assert sink.address == http_sink.address and sink.inner is http_sink
        sink.update_stats({"fps": 3.0})
        assert json.loads(http_sink.status_json())["stats"] == {"fps": 3.0}
    finally:
        sink.close()
    jsonl = JsonlSink("-")
    assert jsonl.address is None and jsonl.inner is jsonl and jsonl.dropped == 0
    jsonl.update_stats({"fps": 3.0})  # ignored by a sink that shows no statistics


# ------------------------------------------------------------------------------------ async


class SlowSink(Sink):
    needs_annotated = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.labels: List[str] = []
        self.closed = False

    def write(self, frame, result, annotated):
        time.sleep(self.delay)
        self.labels.append(result.label)

    def close(self):
        self.closed = True


class GatedSink(SlowSink):
    """Each write waits until the test opens ``gate``."""

    def __init__(self) -> None:
        super().__init__(0)
        self.gate = threading.Event()

    def write(self, frame, result, annotated):
        # Bounded, so a caller that waited for this sink fails the test instead of hanging it.
        if not self.gate.wait(5):
            self.gate.set()
        self.labels.append(result.label)


def test_async_sink_never_stalls_drops_oldest_and_drains_on_close():
    inner = GatedSink()
    sink = AsyncSink(inner, maxsize=8)
    assert sink.needs_annotated
    frame = make_frame()
    for i in range(100):
        sink.write(frame, make_result(f"r{i}", index=i), None)
    # The inner sink cannot finish a write before the gate opens: every call returned without it.
    assert inner.labels == []
    assert sink.dropped > 0
    inner.gate.set()
    sink.close(timeout=5)
    assert inner.closed
    assert sink.written == len(inner.labels) and sink.written + sink.dropped == 100
    assert inner.labels[-8:] == [f"r{i}" for i in range(92, 100)], "the newest results survive"


def test_lossless_async_sink_waits_for_room_and_writes_every_result_in_order():
    inner = SlowSink(0.01)
    sink = AsyncSink(inner, maxsize=2)
    sink.lossless = True
    t0 = time.monotonic()
    for i in range(20):
        sink.write(make_frame(i), make_result(f"r{i}", index=i), None)
    # The writer waited for the sink: at most the queue (2) and the write in progress are left.
    assert time.monotonic() - t0 >= 0.01 * (20 - 3)
    sink.close(timeout=5)
    assert sink.dropped == 0 and sink.written == 20
    assert inner.labels == [f"r{i}" for i in range(20)]


def test_lossless_async_sink_does_not_wait_on_a_disabled_sink():
    class BrokenSink(SlowSink):
        def write(self, frame, result, annotated):
            time.sleep(0.02)
            raise OSError("disk gone")

    sink = AsyncSink(BrokenSink(0), maxsize=1)
    sink.lossless = True
    t0 = time.monotonic()
    for i in range(50):
        sink.write(make_frame(i), make_result(index=i), None)
    assert time.monotonic() - t0 < 1.0 and sink.disabled
    sink.close()


def test_async_sink_disables_a_failing_sink_and_logs_its_name(caplog):
    class BrokenSink(SlowSink):
        def write(self, frame, result, annotated):
            raise OSError("network unreachable")

    inner = BrokenSink(0)
    sink = AsyncSink(inner)
    with caplog.at_level("ERROR", logger="edgesight.sinks"):
        for i in range(5):
            sink.write(make_frame(i), make_result(index=i), None)
        sink.close()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "BrokenSink" in errors[0] and "network unreachable" in errors[0]
    assert sink.disabled and isinstance(sink.error, OSError) and inner.closed
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(make_frame(), make_result(), None)


def test_async_sink_close_gives_up_after_the_timeout(caplog):
    inner = SlowSink(0.5)
    sink = AsyncSink(inner, maxsize=4, name="slow-nfs")
    for i in range(4):
        sink.write(make_frame(i), make_result(index=i), None)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="edgesight.sinks"):
        sink.close(timeout=0.2)
    assert time.monotonic() - t0 < 0.4
    assert sink.dropped == 3 and "slow-nfs" in caplog.text
    assert wait_until(lambda: inner.closed, 2.0), "closed once the current write returns"
    assert inner.labels == ["cat"]
