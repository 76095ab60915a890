"""``edgesight run`` end to end on real sources: image folders, a video file, synthetic frames."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli

from edgesight.edge.model.bundle import load_bundle
from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.edge.loop.config import RunConfig
from edgesight.edge.loop.runner import run_loop
from edgesight.edge.sinks import Sink
from edgesight.edge.sources import open_source

pytestmark = pytest.mark.slow


def test_run_on_test_images_matches_conversion_predictions(color_bundle, trained_run, tmp_path, capsys):
    from edgesight.training.data import Split

    test = Split.load(trained_run / "split.json").test
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, s in enumerate(test):
        shutil.copy(s.path, folder / f"{i:03d}.png")
    code, out, err = run_cli(["run", color_bundle, "--source", folder, "--jsonl", tmp_path / "e.jsonl", "--stats-json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    events = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    labels = (color_bundle / "labels.txt").read_text().split()
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    assert [labels.index(e["label"]) for e in events] == report["predictions_quant"]
    assert [Path(e["path"]).name for e in events] == [f"{i:03d}.png" for i in range(len(test))]
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["frames"] == len(test) and st["dropped"] == 0
    assert {"p50", "p95", "p99"} <= set(st["latency_ms"]) and st["fps"] > 0
    assert f"{len(test)} frames in" in out


def test_run_video_file_every_frame_and_annotated_output(color_bundle, tmp_path, capsys):
    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20, (64, 48))
    colors = [(0, 0, 220)] * 10 + [(40, 200, 40)] * 10
    for bgr in colors:
        w.write(np.full((48, 64, 3), bgr, np.uint8))
    w.release()
    code, out, err = run_cli(["run", color_bundle, "--source", path, "--save", tmp_path / "out.mp4", "--jsonl", tmp_path / "e.jsonl",
                              "--on-change-only", "--smooth", "3"], capsys)
    assert code == 0, err
    events = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["label"] for e in events] == ["red", "green"]  # on-change-only, smoothed
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 20
    assert "frame 0: red" in out


class SlowModel(TFLiteClassifier):
    """The real model made deliberately slower than the camera."""

    def invoke(self):
        time.sleep(0.05)
        super().invoke()


def test_live_source_latency_stays_bounded_when_inference_is_slow(color_bundle):
    b = load_bundle(color_bundle)
    model = SlowModel(b.model_path)
    with open_source("synthetic:64x48@60") as src:
        stats = run_loop(model, b.info, src, [], RunConfig(duration=1.5, stats_interval=0), printer=lambda s: None)
    p = stats.percentiles()
    assert 10 <= stats.frames <= 30  # ~20 FPS of inference
    assert stats.dropped_source >= 2 * stats.frames  # a 60 FPS camera: most frames are skipped
    assert p["p99"] < 50 + 2 * 17 + 40  # invoke + at most ~two camera periods + scheduling slack


def test_sigterm_finishes_frame_writes_stats_and_exits_zero(color_bundle, tmp_path):
    cmd = [sys.executable, "-m", "edgesight.cli", "run", str(color_bundle), "--source", "synthetic:64x48@30",
           "--jsonl", str(tmp_path / "e.jsonl"), "--stats-json", str(tmp_path / "s.json"), "--stats-interval", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "e.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping (SIGTERM)" in err
    st = json.loads((tmp_path / "s.json").read_text())
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert st["frames"] == len(lines) > 10  # every processed frame reached the JSONL file
    assert all(json.loads(l)["frame"] >= 0 for l in lines)


def test_run_errors(color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["run", color_bundle, "--source", tmp_path / "missing.mp4"], capsys)
    assert code == 1 and "missing.mp4" in err
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic", "--gpio-on", "red"], capsys)
    assert code == 1 and "--gpio-on needs --gpio PIN" in err
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic", "--roi", "1,2"], capsys)
    assert code == 1 and "expected x,y,w,h" in err


def test_status_file_and_systemd_notifications(color_bundle, tmp_path, capsys, monkeypatch):
    import socket

    sock_path = str(tmp_path / "n.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(sock_path)
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic:64x48@50", "--duration", "1.5", "--stats-interval", "0.3",
                            "--status-file", tmp_path / "status.json", "-q"], capsys)
    assert code == 0, err
    messages = []
    listener.settimeout(0.2)
    try:
        while True:
            messages.append(listener.recv(512).decode())
    except socket.timeout:
        pass
    assert messages[0].startswith("READY=1") and messages[-1] == "STOPPING=1"
    assert any(m.startswith("WATCHDOG=1") for m in messages)
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["finished"] is True and st["frames"] > 10 and st["label"] in ("red", "green", "blue", "unknown")


class Keep(Sink):
    """A sink that keeps what it was handed."""

    def __init__(self, annotated: bool, raw: bool = False) -> None:
        self.needs_annotated, self.needs_raw_frame = annotated, raw
        self.seen = []

    def write(self, frame, result, annotated):
        self.seen.append((frame.image.copy(), frame.image, annotated))

    def close(self):
        pass


@pytest.mark.parametrize("raw", [False, True])
def test_overlay_drawn_in_place_unless_a_sink_needs_the_raw_frame(color_bundle, raw):
    b = load_bundle(color_bundle)
    model = TFLiteClassifier(b.model_path)
    sinks = [Keep(annotated=True), Keep(annotated=False, raw=raw)]
    with open_source("synthetic:64x48", count=3) as src:
        stats = run_loop(model, b.info, src, sinks, RunConfig(stats_interval=0), printer=lambda s: None)
    assert stats.frames == 3 and len(sinks[0].seen) == 3
    with open_source("synthetic:64x48", count=3) as src:
        originals = [src.read().image for _ in range(3)]
    for (image_at_write, image, annotated), original in zip(sinks[0].seen, originals):
        assert not np.array_equal(annotated, original), "the overlay is drawn"
        # Without a raw-frame sink the overlay goes on the frame itself (no full-frame copy).
        assert (annotated is image) is (not raw)
        assert np.array_equal(image_at_write, annotated if not raw else original)


def _mixed_video(path: Path, n: int = 24) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20, (64, 48))
    rng = np.random.default_rng(3)
    for i in range(n):
        img = np.full((48, 64, 3), (0, 0, 220) if (i // 3) % 2 else (40, 200, 40), np.uint8)
        w.write(np.clip(img.astype(int) + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8))
    w.release()
    return path


def test_frame_parallel_gives_the_serial_results_in_order(color_bundle, tmp_path):
    video = _mixed_video(tmp_path / "mixed.mp4")
    b = load_bundle(color_bundle)
    # Same labels and scores frame by frame, in frame order.
    results = {}
    for workers in (1, 3, 0):  # serial, three at once, and automatic: one interpreter on its own thread
        events = []

        class Collect(Keep):
            def write(self, frame, result, annotated):
                events.append((frame.index, result.label, round(result.score, 6)))

        clf = TFLiteClassifier(b.model_path)
        real_invoke, invoked_on = clf.invoke, set()

        def invoke():
            invoked_on.add(threading.current_thread().name)
            real_invoke()

        clf.invoke = invoke
        with open_source(str(video)) as src:
            run_loop(clf, b.info, src, [Collect(False)], RunConfig(stats_interval=0, frame_workers=workers),
                     printer=lambda s: None)
        results[workers] = events
        if workers == 1:
            assert invoked_on == {threading.current_thread().name}
        if workers == 0:
            # With a core to spare the next frame is classified while this thread reports.
            expected = {"edgesight-infer-0"} if (os.cpu_count() or 1) > 1 else {threading.current_thread().name}
            assert invoked_on == expected
    assert [e[0] for e in results[3]] == list(range(24))
    assert results[3] == results[1] == results[0]
    assert {e[1] for e in results[1]} == {"red", "green"}


def test_frame_parallel_stops_at_max_frames_and_on_stop(color_bundle, tmp_path):
    from edgesight.edge.loop.runner import StopFlag

    video = _mixed_video(tmp_path / "mixed.mp4")
    b = load_bundle(color_bundle)
    with open_source(str(video)) as src:
        stats = run_loop(TFLiteClassifier(b.model_path), b.info, src, [], RunConfig(stats_interval=0, frame_workers=2, max_frames=7),
                         printer=lambda s: None)
    assert stats.frames == 7
    flag = StopFlag()
    seen = []

    def stop_after_five(result, st):
        seen.append(result.frame_index)
        if st.frames == 5:
            flag.set("test")

    with open_source(str(video)) as src:
        stats = run_loop(TFLiteClassifier(b.model_path), b.info, src, [], RunConfig(stats_interval=0, frame_workers=2),
                         stop=flag, printer=lambda s: None, on_result=stop_after_five)
    # Frames already in flight when the stop came are finished and reported, no more are read.
    assert 5 <= stats.frames <= 5 + 3 and seen == list(range(stats.frames))


def test_frame_parallel_raises_a_worker_error_on_the_loop_thread(color_bundle, tmp_path):
    video = _mixed_video(tmp_path / "mixed.mp4", 12)
    b = load_bundle(color_bundle)
    clf = TFLiteClassifier(b.model_path, num_threads=2)
    real_clone, clones = clf.clone, []

    def failing_clone(num_threads=None):
        m = real_clone(num_threads=num_threads)
        clones.append(m)
        if len(clones) == 2:  # the second worker gets frames 1, 3, 5...: fail on frame 5
            real_invoke, invokes = m.invoke, []

            def invoke():
                invokes.append(1)
                if len(invokes) == 3:
                    raise RuntimeError("interpreter failed on this frame")
                real_invoke()

            m.invoke = invoke
        return m

    clf.clone = failing_clone
    seen = []
    with open_source(str(video)) as src, pytest.raises(RuntimeError, match="interpreter failed"):
        run_loop(clf, b.info, src, [], RunConfig(stats_interval=0, frame_workers=2), printer=lambda s: None,
                 on_result=lambda r, st: seen.append(r.frame_index))
    assert seen == [0, 1, 2, 3, 4]  # the frames before the failing one were reported, in order
    assert not [t for t in threading.enumerate() if t.name.startswith("edgesight-infer")]


def test_frame_workers_policy(color_bundle):
    from edgesight.edge.loop.runner import frame_workers

    b = load_bundle(color_bundle)
    two = TFLiteClassifier(b.model_path, num_threads=2)
    with open_source("synthetic:64x48", count=2) as finite:
        assert frame_workers(two, finite) == 2
        assert frame_workers(TFLiteClassifier(b.model_path), finite) == 1
        assert frame_workers(two, finite, requested=3) == 3
    with open_source("synthetic:64x48@30") as live:
        assert frame_workers(two, live) == 1  # a camera: newest frame first, all threads on it
    two.has_delegates = True
    with open_source("synthetic:64x48", count=2) as finite:
        assert frame_workers(two, finite) == 1  # one accelerator


def test_run_cli_with_two_threads_reports_every_frame_of_a_file_in_order(color_bundle, tmp_path, capsys):
    video = _mixed_video(tmp_path / "mixed.mp4", 18)
    code, out, err = run_cli(["run", color_bundle, "--source", video, "--threads", "2", "--jsonl", tmp_path / "e.jsonl",
                              "--stats-json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    events = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in events] == list(range(18))
    assert [e["label"] for e in events] == ["green" if (i // 3) % 2 == 0 else "red" for i in range(18)]
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 18


class _SlowRecorder(Sink):
    """A sink slower than the model, recording the frame indices it was given."""

    needs_annotated = False

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.frames = []

    def write(self, frame, result, annotated):
        time.sleep(self.delay)
        self.frames.append(result.frame_index)

    def close(self):
        pass


@pytest.mark.parametrize("workers", [1, 2])
def test_a_slow_output_still_gets_every_result_of_a_file(color_bundle, tmp_path, workers):
    from edgesight.edge.sinks import AsyncSink

    video = _mixed_video(tmp_path / "mixed.mp4", 18)
    b = load_bundle(color_bundle)
    inner = _SlowRecorder(0.01)
    sink = AsyncSink(inner, maxsize=2)
    with open_source(str(video)) as src:
        stats = run_loop(TFLiteClassifier(b.model_path, num_threads=2), b.info, src, [sink],
                         RunConfig(stats_interval=0, frame_workers=workers), printer=lambda s: None)
    sink.close()
    assert sink.lossless and stats.frames == 18 and stats.dropped_sinks == 0
    assert inner.frames == list(range(18))


def test_a_slow_output_drops_the_oldest_results_of_a_camera(color_bundle):
    from edgesight.edge.sinks import AsyncSink

    b = load_bundle(color_bundle)
    inner = _SlowRecorder(0.05)
    sink = AsyncSink(inner, maxsize=2)
    with open_source("synthetic:64x48@200") as src:
        stats = run_loop(TFLiteClassifier(b.model_path), b.info, src, [sink],
                         RunConfig(stats_interval=0, max_frames=40), printer=lambda s: None)
    sink.close()
    assert not sink.lossless and stats.frames == 40
    assert stats.dropped_sinks > 0 and len(inner.frames) + stats.dropped_sinks == 40
    assert inner.frames == sorted(inner.frames) and inner.frames[-1] == max(inner.frames)


def test_the_progress_line_has_p99_and_the_stages():
    from edgesight.edge.loop.stats import LoopStats

    st = LoopStats()
    for ms in range(1, 101):
        st.add(float(ms), {"preprocess": 1.0, "invoke": 3.0})
    line = st.line()
    assert "latency p50 50.5 / p95 95.0 / p99 99.0 ms" in line
    assert line.endswith("(per frame ms: preprocess 1.0, invoke 3.0)")
