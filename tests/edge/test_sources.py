"""Frame sources: real files, synthetic frames, latest-frame semantics, reconnects, and the camera
adapters with the OpenCV capture / Picamera2 object replaced at their factory functions."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesight.edge.sources import picamera2 as camera_picamera2

from edgesight.edge.sources import opencv
from edgesight.edge.sources.picamera2 import Picamera2Source, lores_to_bgr
from edgesight.edge.errors import MissingDependencyError, SourceError
from edgesight.edge.sources import (
    DecodeAhead,
    auto_prefetch,
    ImageFolderSource,
    OpenCVSource,
    SyntheticSource,
    VideoFileSource,
    open_source,
    redact_url,
)


def read_all(source, limit=1000):
    frames = []
    while len(frames) < limit:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


def write_video(path: Path, frames: int, fps: float, size=(64, 48)) -> Path:
    """Frame i is solid grey 20*i (mod 240), so a decoded frame tells which one it is."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "this OpenCV build cannot write mp4v"
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (20 * i) % 240, np.uint8))
    writer.release()
    check = cv2.VideoCapture(str(path))
    assert check.isOpened() and int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    check.release()
    return path


def grey_index(frame) -> int:
    return int(round(frame.image.mean() / 20))


@pytest.fixture
def video_12(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", 12, 25.0)


# --------------------------------------------------------------------------- video files


def test_video_file_returns_every_frame_in_order(video_12):
    with open_source(str(video_12)) as src:
        assert isinstance(src, DecodeAhead) and isinstance(src.source, VideoFileSource) and not src.live
        assert src.fps == pytest.approx(25.0) and src.frame_count == 12
        frames = read_all(src)
        assert src.read() is None
    assert [f.index for f in frames] == list(range(12))
    assert [grey_index(f) for f in frames] == list(range(12))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.path is None for f in frames)
    assert (src.captured, src.dropped, src.reconnects, src.skipped) == (12, 0, 0, 0)


def test_video_realtime_paces_a_fast_consumer_to_the_file_rate(tmp_path):
    path = write_video(tmp_path / "fast.mp4", 8, 25.0)
    start = time.monotonic()
    with VideoFileSource(str(path), realtime=True) as src:
        frames = read_all(src)
    elapsed = time.monotonic() - start
    assert elapsed >= frames[-1].index / 25.0 - 0.005  # never ahead of the file's clock
    # A fast consumer keeps up; one drop is tolerated for a scheduling hiccup on a loaded machine.
    assert src.dropped <= 1 and len(frames) + src.dropped == 8


def test_video_realtime_drops_frames_a_slow_consumer_falls_behind_on(tmp_path):
    path = write_video(tmp_path / "slow.mp4", 25, 50.0)
    with VideoFileSource(str(path), realtime=True) as src:
        frames = []
        while (frame := src.read()) is not None:
            frames.append(frame)
            time.sleep(0.05)  # 2.5 frame periods per frame
    indices = [f.index for f in frames]
    assert src.dropped > 0 and len(frames) + src.dropped == 25 == src.captured
    assert indices == sorted(set(indices)) and indices[-1] <= 24
    assert [grey_index(f) for f in frames] == [i % 12 for i in indices]  # skipped by grab(), still in sync


def test_video_loop_restarts_and_keeps_counting(video_12):
    with open_source(str(video_12), loop=True) as src:
        frames = read_all(src, limit=30)
    assert [f.index for f in frames] == list(range(30))
    assert [grey_index(f) for f in frames[10:15]] == [10, 11, 0, 1, 2]


def test_undecodable_video_is_a_source_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="cannot decode video .*broken.mp4.*ffmpeg"):
        open_source(str(bad))


# --------------------------------------------------------------------------- image folders and globs


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.PNG").write_bytes(cv2.imencode(".png", np.full((12, 16), 10, np.uint8))[1].tobytes())  # grey
    (folder / "b.png").write_bytes(cv2.imencode(".png", np.full((12, 16, 3), 20, np.uint8))[1].tobytes())
    (folder / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "c.Jpg").write_bytes(cv2.imencode(".jpg", np.full((12, 16, 3), 30, np.uint8))[1].tobytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "d.png").write_bytes(cv2.imencode(".png", np.full((12, 16, 3), 40, np.uint8))[1].tobytes())
    return folder


def test_image_folder_sorted_any_case_skips_corrupt_with_warning(image_folder, caplog):
    caplog.set_level(logging.WARNING, logger="edgesight.source")
    with open_source(str(image_folder)) as src:
        assert isinstance(src, DecodeAhead) and isinstance(src.source, ImageFolderSource) and not src.live
        frames = read_all(src)
    # sub-folders too, like `edgesight classify`
    assert [Path(f.path).name for f in frames] == ["a.PNG", "b.png", "c.Jpg", "d.png"]
    assert [f.index for f in frames] == [0, 1, 3, 4]  # the gap is the skipped file
    assert all(f.image.shape == (12, 16, 3) for f in frames)  # the grey PNG comes back as BGR
    assert [int(round(f.image.mean())) for f in frames] == [10, 20, 30, 40]
    assert src.skipped == 1 and src.captured == 4
    assert any("b_corrupt.png" in r.getMessage() for r in caplog.records if r.name == "edgesight.source")


def test_image_folder_loop_counts_a_corrupt_file_once(image_folder):
    with ImageFolderSource(str(image_folder), loop=True) as src:
        frames = read_all(src, limit=7)
    assert [Path(f.path).name for f in frames] == ["a.PNG", "b.png", "c.Jpg", "d.png"] + ["a.PNG", "b.png", "c.Jpg"]
    assert src.skipped == 1


def test_glob_patterns(image_folder):
    with open_source(str(image_folder / "*.png")) as src:
        names = [Path(f.path).name for f in read_all(src)]
    assert names == ["b.png"] and src.skipped == 1  # '*.png' is case-sensitive, like the shell
    with open_source(str(image_folder / "**" / "*.png")) as src:
        names = [Path(f.path).name for f in read_all(src)]
    assert names == ["b.png", "d.png"]
    with pytest.raises(SourceError, match="no images in glob pattern"):
        open_source(str(image_folder / "*.txt"))
    with pytest.raises(SourceError, match="matches no files"):
        open_source(str(image_folder / "nothing*.jpg"))


def test_single_image_and_empty_folder(image_folder, tmp_path):
    with open_source(str(image_folder / "c.Jpg")) as src:
        frames = read_all(src)
    assert len(frames) == 1 and frames[0].path.endswith("c.Jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images in folder .*empty.*jpg"):
        open_source(str(tmp_path / "empty"))


# --------------------------------------------------------------------------- synthetic frames


def test_synthetic_unpaced_is_deterministic_and_finite():
    a, b = SyntheticSource(64, 48, count=5), SyntheticSource(64, 48, count=5)
    fa, fb = read_all(a), read_all(b)
    assert not a.live and len(fa) == 5 and a.read() is None and a.captured == 5
    assert [f.index for f in fa] == list(range(5))
    for x, y in zip(fa, fb):
        assert x.image.shape == (48, 64, 3) and x.image.dtype == np.uint8
        assert np.array_equal(x.image, y.image) and np.array_equal(x.image, a.render(x.index))
    assert not np.array_equal(fa[0].image, fa[1].image)  # the pattern moves and the index is drawn


def test_synthetic_live_produces_frames_without_a_reader_at_its_fps():
    start = time.monotonic()
    with SyntheticSource(64, 48, fps=50, live=True) as src:
        assert src.live
        time.sleep(0.2)
        produced = src.captured
        frame = src.read()
        assert produced >= 5  # ~10 at 50 FPS; nobody was reading
        assert frame.index >= produced - 1 and src.dropped >= produced - 2  # the newest, not the oldest
        assert np.array_equal(frame.image, src.render(frame.index))
        frames = [src.read() for _ in range(5)]
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[0] > frame.index
    assert time.monotonic() - start >= (indices[-1]) / 50.0 - 0.01


def test_latest_frame_semantics_bound_latency_for_a_slow_consumer():
    fps, consumer_period = 60.0, 0.05
    ages, indices = [], []
    with SyntheticSource(160, 120, fps=fps, live=True) as src:
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            time.sleep(consumer_period)  # a model slower than the camera
            frame = src.read()
            ages.append(time.monotonic() - frame.timestamp)
            indices.append(frame.index)
        captured, dropped = src.captured, src.dropped
    assert dropped > 0
    assert max(ages) <= 2 / fps + consumer_period, f"stale frame: {max(ages) * 1000:.1f} ms old"
    assert abs(captured - (len(indices) + dropped)) <= 2
    assert indices == sorted(set(indices))


def test_live_close_is_prompt_even_between_slow_frames():
    src = SyntheticSource(32, 32, fps=0.5, live=True)
    assert src.read() is not None  # the next frame is 2 s away
    start = time.monotonic()
    src.close()
    assert time.monotonic() - start < 0.5
    assert src.read() is None


# --------------------------------------------------------------------------- OpenCV capture fakes


class FakeCapture:
    """Stands in for cv2.VideoCapture: records how it was opened and configured, serves frames."""

    def __init__(self, target, api, params, opened=True, fail_after=None, raise_after=None, gray=False, delay=0.01):
        self.target, self.api, self.params = target, api, tuple(params)
        self.opened, self.fail_after, self.raise_after = opened, fail_after, raise_after
        self.gray, self.delay = gray, delay
        self.props = {}
        self.reads = 0
        self.released = False

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return float(self.props.get(prop, 0.0))

    def read(self):
        time.sleep(self.delay)  # a camera's frame period; keeps the capture thread off the CPU
        if self.raise_after is not None and self.reads >= self.raise_after:
            raise RuntimeError("driver exploded")
        if self.fail_after is not None and self.reads >= self.fail_after:
            return False, None
        self.reads += 1
        w, h = int(self.props.get(cv2.CAP_PROP_FRAME_WIDTH, 64)), int(self.props.get(cv2.CAP_PROP_FRAME_HEIGHT, 48))
        shape = (h, w) if self.gray else (h, w, 3)
        return True, np.full(shape, self.reads % 256, np.uint8)

    def release(self):
        self.released = True


class CaptureFactory:
    """Replaces edge.sources.opencv._open_capture; the n-th open uses plan[n] (the last one repeats)."""

    def __init__(self, *plan):
        self.plan = plan or ({},)
        self.calls, self.captures, self.times = [], [], []

    def __call__(self, target, api, params=()):
        kwargs = self.plan[min(len(self.calls), len(self.plan) - 1)]
        self.calls.append((target, api, tuple(params)))
        self.times.append(time.monotonic())
        cap = FakeCapture(target, api, params, **kwargs)
        self.captures.append(cap)
        return cap


@pytest.fixture
def fake_capture(monkeypatch):
    def install(*plan):
        factory = CaptureFactory(*plan)
        monkeypatch.setattr(opencv, "_open_capture", factory)
        return factory

    return install


def test_reconnect_with_exponential_backoff(fake_capture, caplog):
    caplog.set_level(logging.INFO, logger="edgesight.source")
    # Frames stop after 5 reads; the first reopen fails, the second succeeds.
    factory = fake_capture(dict(fail_after=5), dict(opened=False), dict())
    with OpenCVSource(0, reconnect_delay=0.03, reconnect_max_delay=1.0, read_timeout=2.0) as src:
        indices = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len([i for i in indices if i >= 5]) < 3:
            indices.append(src.read().index)
        assert src.reconnects == 1
    assert len(factory.calls) == 3
    assert factory.times[2] - factory.times[1] >= 0.055  # the delay doubled after the failed attempt
    assert factory.captures[0].released and factory.captures[1].released and factory.captures[2].released
    assert max(indices) >= 7 and indices == sorted(set(indices))  # frames kept coming, index kept counting
    messages = [r.getMessage() for r in caplog.records if r.name == "edgesight.source"]
    assert any("reconnect attempt 1 failed" in m for m in messages)
    assert any("reconnected after 2 attempt(s)" in m for m in messages)


def test_driver_exception_is_logged_and_reconnected(fake_capture, caplog):
    caplog.set_level(logging.WARNING, logger="edgesight.source")
    fake_capture(dict(raise_after=2), dict())
    with OpenCVSource(0, reconnect_delay=0.01, read_timeout=2.0) as src:
        while src.read().index < 4:
            pass
        assert src.reconnects == 1
    assert any("RuntimeError: driver exploded" in r.getMessage() for r in caplog.records)


def test_without_reconnect_a_failed_device_ends_the_source(fake_capture):
    factory = fake_capture(dict(fail_after=3))
    with OpenCVSource(0, reconnect=False, read_timeout=2.0) as src:
        frames = read_all(src)
    assert len(frames) == 3 and src.reconnects == 0 and len(factory.calls) == 1
    assert factory.captures[0].released


def test_read_timeout_raises_a_source_error(fake_capture):
    fake_capture(dict(delay=0.3))
    src = OpenCVSource(0, read_timeout=0.05)
    try:
        with pytest.raises(SourceError, match="no frame from camera 0 for 0.05 s"):
            src.read()
    finally:
        src.close()


@pytest.mark.hardware
def test_v4l2_device_path_through_opencv(fake_capture):
    factory = fake_capture(dict(gray=True))
    with open_source("/dev/video2", width=320, height=240, fps=15, read_timeout=2.0) as src:
        assert isinstance(src, OpenCVSource) and src.live
        frame = src.read()
    target, api, params = factory.calls[0]
    assert (target, api, params) == ("/dev/video2", cv2.CAP_V4L2, ())
    props = factory.captures[0].props
    assert props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert (props[cv2.CAP_PROP_FRAME_WIDTH], props[cv2.CAP_PROP_FRAME_HEIGHT], props[cv2.CAP_PROP_FPS]) == (320, 240, 15)
    assert frame.image.shape == (240, 320, 3)  # grayscale camera converted to BGR
    assert factory.captures[0].released


@pytest.mark.hardware
def test_camera_index_uses_v4l2_and_a_failed_open_says_what_to_check(fake_capture):
    factory = fake_capture()
    with open_source("1", read_timeout=2.0) as src:
        src.read()
    assert factory.calls[0][:2] == (1, cv2.CAP_V4L2)
    fake_capture(dict(opened=False))
    with pytest.raises(SourceError, match="cannot open camera 1: .*v4l2-ctl --list-devices.*'video' group"):
        open_source("1")


@pytest.mark.hardware
@pytest.mark.parametrize(
    "url",
    [
        "rtsp://admin:hunter2@10.0.0.5:554/stream1",
        "rtsps://cam.local/live",
        "http://cam.local:8080/video.mjpg",
        "https://cam.local/stream.m3u8",
    ],
)
def test_network_stream_through_opencv_ffmpeg(fake_capture, url, caplog):
    caplog.set_level(logging.INFO, logger="edgesight.source")
    factory = fake_capture()
    with open_source(url, read_timeout=2.0) as src:
        assert isinstance(src, OpenCVSource) and src.live
        assert src.read().image.shape == (48, 64, 3)
    target, api, params = factory.calls[0]
    assert target == url and api == cv2.CAP_FFMPEG
    opts = dict(zip(params[::2], params[1::2]))
    assert opts == {cv2.CAP_PROP_OPEN_TIMEOUT_MSEC: 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC: 10000}
    assert factory.captures[0].props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert "hunter2" not in src.name and all("hunter2" not in r.getMessage() for r in caplog.records)


@pytest.mark.hardware
def test_stream_open_failure_names_the_stream_without_its_password(fake_capture):
    fake_capture(dict(opened=False))
    with pytest.raises(SourceError) as err:
        open_source("rtsp://admin:hunter2@10.0.0.5/stream1")
    assert "rtsp://admin:***@10.0.0.5/stream1" in str(err.value) and "ffprobe" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_redact_url():
    assert redact_url("rtsp://u:p%40ss@host:554/x?y=1") == "rtsp://u:***@host:554/x?y=1"
    assert redact_url("rtsp://host/x") == "rtsp://host/x"
    assert redact_url("rtsp://user@host/x") == "rtsp://user@host/x"


def test_missing_v4l2_device_is_a_source_error():
    with pytest.raises(SourceError, match="/dev/video97 does not exist: list cameras with"):
        open_source("/dev/video97")


# --------------------------------------------------------------------------- open_source parsing


@pytest.mark.parametrize(
    "spec, kwargs, expected",
    [
        ("synthetic", {}, (640, 480, 30.0)),
        ("synthetic:15", {}, (640, 480, 15.0)),
        ("synthetic:320x240", {}, (320, 240, 30.0)),
        ("synthetic:320x240@12.5", {}, (320, 240, 12.5)),
        ("Synthetic", dict(width=64, height=48, fps=5), (64, 48, 5.0)),
        ("synthetic:96x64@20", dict(width=64, height=48, fps=5), (96, 64, 20.0)),  # the spec wins
    ],
)
def test_open_source_synthetic_specs(spec, kwargs, expected):
    with open_source(spec, **kwargs) as src:
        assert isinstance(src, SyntheticSource) and src.live
        assert (src.width, src.height, src.fps) == expected
        assert src.read().image.shape == (expected[1], expected[0], 3)


def test_open_source_synthetic_count_is_unpaced_and_finite():
    with open_source("synthetic:32x32@1", count=4) as src:
        start = time.monotonic()
        assert not src.live and len(read_all(src)) == 4
        assert time.monotonic() - start < 0.5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty --source"),
        ("   ", "empty --source"),
        ("synthetic:abc", "bad frame rate 'abc' in source 'synthetic:abc'"),
        ("synthetic:0", "bad frame rate '0'"),
        ("synthetic:10x@5", "bad size '10x'"),
        ("synthetic:64x48@", "bad frame rate ''"),
        ("picamera2:", "write picamera2 or picamera2:WIDTHxHEIGHT"),
        ("picamera2:12", "bad size '12' in source 'picamera2:12'"),
        ("ftp://host/clip.mp4", "unsupported stream 'ftp://host/clip.mp4'"),
        ("no_such_clip.mp4", "source 'no_such_clip.mp4' not found: give a camera index"),
        ("no/such/folder/", "source 'no/such/folder/' not found"),
    ],
)
def test_open_source_rejects_bad_specs_naming_them(spec, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace("?", r"\?")):
        open_source(spec)


def test_open_source_rejects_files_of_unknown_kind(tmp_path):
    odd = tmp_path / "model.tflite"
    odd.write_bytes(b"\0")
    with pytest.raises(SourceError, match="model.tflite is neither a video .* nor an image"):
        open_source(str(odd))


# --------------------------------------------------------------------------- picamera2


def bgr_scene(width, height):
    """Four solid quadrants: red, green, blue, grey (BGR)."""
    scene = np.empty((height, width, 3), np.uint8)
    scene[: height // 2, : width // 2] = (0, 0, 220)
    scene[: height // 2, width // 2 :] = (0, 200, 0)
    scene[height // 2 :, : width // 2] = (220, 0, 0)
    scene[height // 2 :, width // 2 :] = (128, 128, 128)
    return scene


def planar_yuv(scene, stride, fmt="YUV420"):
    """The array picamera2 returns for a YUV420/YVU420 stream: (H*3/2, stride), padded rows."""
    h, w = scene.shape[:2]
    i420 = cv2.cvtColor(scene, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h]
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    if fmt == "YVU420":
        u, v = v, u

    def pad(plane, width):
        out = np.full((plane.shape[0], width), 255, np.uint8)  # junk in the padding must be cropped
        out[:, : plane.shape[1]] = plane
        return out

    chroma = [pad(p, stride // 2).reshape(h // 4, stride) for p in (u, v)]
    return np.vstack([pad(y, stride)] + chroma)


class FakePicamera2:
    """Records the picamera2 calls the adapter makes and serves frames in the configured formats."""

    def __init__(self, camera_num, refuse=None):
        self.camera_num, self.refuse = camera_num, refuse
        self.calls = []
        self.captures = 0

    def create_video_configuration(self, main=None, lores=None, controls=None, **other):
        self.calls.append(("create_video_configuration", dict(main=main, lores=lores, controls=controls, **other)))
        return {"main": dict(main), "lores": dict(lores), "controls": dict(controls)}

    def configure(self, config):
        self.calls.append("configure")
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.config = config

    def camera_configuration(self):
        return self.config

    def start(self):
        self.calls.append("start")

    def _array(self, name):
        stream = self.config[name]
        w, h = stream["size"]
        scene = bgr_scene(w, h)
        if stream["format"] in ("YUV420", "YVU420"):
            return planar_yuv(scene, stride=w + 64, fmt=stream["format"])
        return scene  # RGB888 is B, G, R in memory

    def capture_array(self, name="main"):
        time.sleep(0.01)
        self.captures += 1
        return self._array(name)

    def capture_arrays(self, names):
        time.sleep(0.01)
        self.captures += 1
        return [self._array(n) for n in names], {"SensorTimestamp": self.captures}

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch):
    cameras = []

    def install(**kwargs):
        def make(camera_num):
            cameras.append(FakePicamera2(camera_num, **kwargs))
            return cameras[-1]

        monkeypatch.setattr(camera_picamera2, "_make_camera", make)
        return cameras

    return install


@pytest.mark.hardware
def test_picamera2_configures_main_and_lores_and_converts_yuv420(fake_picamera2):
    cameras = fake_picamera2()
    with Picamera2Source(size=(64, 48), display_size=(320, 240), fps=25, read_timeout=2.0) as src:
        assert src.live
        frame = src.read()
        assert src.last_main is None
    cam = cameras[0]
    name, config = cam.calls[0]
    assert name == "create_video_configuration"
    assert config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert config["lores"] == {"size": (64, 48), "format": "YUV420"}
    assert config["controls"] == {"FrameDurationLimits": (40000, 40000)}
    assert cam.calls[1:3] == ["configure", "start"] and cam.calls[-2:] == ["stop", "close"]
    assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
    # Colours survive the conversion (a swapped U/V plane would turn red into blue).
    diff = np.abs(frame.image.astype(int) - bgr_scene(64, 48).astype(int))
    assert np.median(diff) <= 3 and diff[5:19, 5:27].max() <= 8


@pytest.mark.hardware
@pytest.mark.parametrize("fmt", ["YUV420", "YVU420"])
def test_lores_planar_yuv_with_stride_padding_converts_to_bgr(fmt):
    scene = bgr_scene(96, 64)
    bgr = lores_to_bgr(planar_yuv(scene, stride=160, fmt=fmt), fmt, (96, 64))
    assert bgr.shape == (64, 96, 3) and bgr.flags["C_CONTIGUOUS"]
    assert np.abs(bgr[10:20, 10:30].astype(int) - (0, 0, 220)).max() <= 8  # red stays red
    with pytest.raises(SourceError, match="expected \\(96, >=96\\)"):
        lores_to_bgr(np.zeros((64, 96), np.uint8), fmt, (96, 64))


@pytest.mark.hardware
def test_picamera2_rgb_lores_with_main_frame_for_display(fake_picamera2):
    cameras = fake_picamera2()
    with open_source("picamera2:64x48", fps=10, read_timeout=2.0) as src:
        assert isinstance(src, Picamera2Source)
        assert src.read().image.shape == (48, 64, 3)
    with Picamera2Source((64, 48), display_size=(160, 120), lores_format="RGB888", capture_main=True) as src:
        frame = src.read()
        main = src.last_main
    assert cameras[0].calls[0][1]["lores"] == {"size": (64, 48), "format": "YUV420"}
    assert cameras[0].calls[0][1]["controls"] == {"FrameDurationLimits": (100000, 100000)}
    assert cameras[1].calls[0][1]["lores"]["format"] == "RGB888"
    assert np.array_equal(frame.image, bgr_scene(64, 48)) and main.shape == (120, 160, 3)


@pytest.mark.hardware
def test_picamera2_refused_configuration_is_a_source_error_and_releases_the_camera(fake_picamera2):
    cameras = fake_picamera2(refuse="lores format not supported")
    with pytest.raises(SourceError, match="lores 64x48 RGB888\\): lores format not supported; on Pi 4 .* YUV420"):
        Picamera2Source((64, 48), lores_format="RGB888")
    assert cameras[0].calls[-2:] == ["stop", "close"]


@pytest.mark.hardware
def test_picamera2_missing_says_how_to_install_on_raspberry_pi_os(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a machine without it
    with pytest.raises(MissingDependencyError) as err:
        Picamera2Source()
    message = str(err.value)
    assert "sudo apt install -y python3-picamera2" in message and "--system-site-packages" in message
    assert "\n" not in message


def test_decode_ahead_unless_one_core_runs_one_thread(video_12):
    assert auto_prefetch(None, cores=2) == 4  # the interpreter's default is one thread
    assert auto_prefetch(1, cores=2) == 4 and auto_prefetch(3, cores=4) == 4
    # Two or more threads classify a file's frames in parallel: a decoder thread feeds them.
    assert auto_prefetch(2, cores=2) == 4 and auto_prefetch(4, cores=4) == 4
    assert auto_prefetch(None, cores=1) == 0 and auto_prefetch(1, cores=1) == 0
    with open_source(str(video_12), prefetch=0) as inline:
        assert isinstance(inline, VideoFileSource)
        assert len(read_all(inline)) == 12
    with open_source(str(video_12), compute_threads=2) as ahead:
        assert isinstance(ahead, DecodeAhead)


def test_decode_ahead_delivers_every_frame_in_order_and_passes_counters(video_12):
    with open_source(str(video_12), prefetch=3) as src:
        frames = read_all(src)
        assert src.read() is None
        assert src.captured == 12 and src.dropped == 0
    assert [grey_index(f) for f in frames] == list(range(12))
    with open_source(str(video_12), prefetch=0) as plain:
        assert isinstance(plain, VideoFileSource)


def test_decode_ahead_stays_a_bounded_number_of_frames_ahead_and_closes_while_waiting(video_12):
    src = open_source(str(video_12), prefetch=3)
    assert src.read() is not None
    time.sleep(0.3)  # a slow consumer: the decoder fills its slots and waits
    assert src.captured == 1 + 3 + 1  # the frame read, three queued, one waiting for a slot
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 1.0 and not src._thread.is_alive()


def test_decode_ahead_prepares_model_input_on_its_thread(video_12):
    from edgesight.edge.model.preprocess import frame_to_pixels
    from edgesight.edge.model.spec import PreprocessSpec

    spec = PreprocessSpec(8, 8)
    with open_source(str(video_12), prefetch=2) as src:
        src.prepare = lambda image: frame_to_pixels(image, spec, (0, 0, 16, 16))
        frames = read_all(src)
    assert len(frames) == 12
    prepared = [f for f in frames if f.pixels is not None]
    assert len(prepared) >= 12 - 3  # frames decoded before prepare was set come without pixels
    for f in prepared:
        np.testing.assert_array_equal(f.pixels, frame_to_pixels(f.image, spec, (0, 0, 16, 16)))


def test_decode_ahead_hands_a_prepare_error_to_the_reader(video_12):
    with open_source(str(video_12), prefetch=2) as src:
        src.prepare = lambda image: (_ for _ in ()).throw(SourceError("bad window"))
        with pytest.raises(SourceError, match="bad window"):
            read_all(src)


def test_small_videos_decode_on_one_ffmpeg_thread_large_ones_keep_threading(tmp_path, video_12):
    with VideoFileSource(str(video_12)) as small:
        assert small._cap.getBackendName() == "FFMPEG"
        assert small._cap.get(cv2.CAP_PROP_N_THREADS) == 1
        assert [grey_index(f) for f in read_all(small)] == list(range(12))
    big = write_video(tmp_path / "big.mp4", 2, 25.0, size=(1920, 1088))
    with VideoFileSource(str(big)) as large:
        assert large._cap.get(cv2.CAP_PROP_N_THREADS) == cv2.VideoCapture(str(big)).get(cv2.CAP_PROP_N_THREADS)
        assert len(read_all(large)) == 2


def test_a_folder_of_class_folders_plays_recursively_in_path_order(tmp_path):
    import cv2 as _cv2

    for cls in ("b_stop", "a_yield"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
    (tmp_path / ".hidden").mkdir()
    _cv2.imwrite(str(tmp_path / ".hidden" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    from edgesight.edge.sources.folder import list_images

    names = [os.path.relpath(p, tmp_path) for p in list_images(str(tmp_path))]
    assert names == ["a_yield/0.png", "a_yield/1.png", "b_stop/0.png", "b_stop/1.png"]


# --------------------------------------------------------------------------- waiting for a device at start


def test_a_camera_not_ready_at_start_is_retried_with_backoff(fake_capture, caplog):
    caplog.set_level(logging.INFO, logger="edgesight.source")
    factory = fake_capture(dict(opened=False), dict(opened=False), dict())
    with OpenCVSource(0, reconnect_delay=0.02, open_timeout=2.0, read_timeout=2.0) as src:
        assert src.read() is not None
    assert len(factory.calls) == 3 and all(c.released for c in factory.captures)
    assert factory.times[2] - factory.times[1] >= 0.035  # the interval doubled
    messages = [r.getMessage() for r in caplog.records if r.name == "edgesight.source"]
    assert sum("waiting for camera 0 to open, up to 2 s" in m for m in messages) == 1


def test_a_camera_that_never_opens_fails_after_open_timeout_saying_how_long(fake_capture, monkeypatch):
    from types import SimpleNamespace

    from edgesight.edge.sources import base

    factory = fake_capture(dict(opened=False))
    now, pauses = [100.0], []

    def pause(seconds):  # a clock that moves only when the source waits: no wall-clock timing
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(base, "_pause", pause)
    monkeypatch.setattr(base, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time, sleep=time.sleep))
    with pytest.raises(SourceError, match=r"cannot open camera 0: .*'video' group \(waited 2\.0 s, 7 attempts\)"):
        OpenCVSource(0, reconnect_delay=0.125, reconnect_max_delay=0.5, open_timeout=2.0)
    # Back-off doubles up to the cap, and the last wait ends exactly at the timeout.
    assert pauses == [0.125, 0.25, 0.5, 0.5, 0.5, 0.125]
    assert len(factory.calls) == 7 and all(c.released for c in factory.captures)


def test_without_open_timeout_a_failed_open_fails_at_once(fake_capture):
    factory = fake_capture(dict(opened=False))
    with pytest.raises(SourceError, match=r"cannot open camera 0: .*'video' group$"):
        OpenCVSource(0)
    assert len(factory.calls) == 1


def test_live_sources_wait_30_s_by_default_and_ctrl_c_ends_the_wait(fake_capture, monkeypatch, caplog):
    from edgesight.edge.sources import base

    caplog.set_level(logging.INFO, logger="edgesight.source")
    factory = fake_capture(dict(opened=False))
    pauses = []

    def pause(seconds):
        pauses.append(seconds)
        if len(pauses) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(base, "_pause", pause)
    with pytest.raises(KeyboardInterrupt):
        open_source("rtsp://cam.local/live")
    assert pauses == [0.5, 1.0, 2.0] and len(factory.calls) == 3
    assert all(c.released for c in factory.captures)
    assert any("waiting for stream rtsp://cam.local/live to open, up to 30 s" in r.getMessage() for r in caplog.records)


def test_files_open_once(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"), open_timeout=5.0)
