"""Generated traffic signs, the drive video and ``edgesight datasets synth --kind traffic-signs``."""

import json

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from tests.conftest import run_cli
from edgesight.training.synth import (
    SIGN_CLASSES,
    canonical_sign,
    drive_roi,
    make_drive_video,
    render_sign,
    write_signs,
)


@pytest.mark.parametrize("size", [16, 48, 64, 97])
def test_every_class_renders_at_several_sizes(size):
    rng = np.random.default_rng(0)
    for kind in SIGN_CLASSES:
        img = render_sign(kind, size, rng)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert img.std() > 5, kind  # a picture, not a blank frame


def test_at_least_eight_distinct_classes():
    assert len(set(SIGN_CLASSES)) == len(SIGN_CLASSES) >= 8
    drawings = [canonical_sign(k, 32) for k in SIGN_CLASSES]
    assert all(not np.array_equal(a, b) for i, a in enumerate(drawings) for b in drawings[i + 1 :])


def test_renders_are_deterministic_for_a_seed():
    def batch(seed):
        rng = np.random.default_rng(seed)
        return [render_sign(k, 48, rng) for k in SIGN_CLASSES]

    first, again, other = batch(3), batch(3), batch(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_turn_left_is_exactly_turn_right_mirrored():
    for size in (24, 64, 255):
        left, right = canonical_sign("turn_left", size), canonical_sign("turn_right", size)
        assert left.shape == (size, size, 4) and left.dtype == np.uint8
        assert np.array_equal(left, right[:, ::-1])
        assert not np.array_equal(left, right)
        # The disc itself is symmetric, so the arrow's direction is the only difference.
        assert np.abs(right[..., 3].astype(int) - right[:, ::-1, 3]).max() <= 2


def test_canonical_sign_alpha_is_the_outline():
    for kind in SIGN_CLASSES:
        sign = canonical_sign(kind, 64)
        assert sign[0, 0, 3] == 0 and sign[32, 32, 3] == 255, kind
    stop = canonical_sign("stop", 64)
    assert stop[10, 32, 2] > 150 and stop[10, 32, 0] < 90  # red (BGR) under the white text band


def test_unknown_kind_and_tiny_size_say_the_fix():
    with pytest.raises(ConfigError, match="choose from: stop, yield"):
        render_sign("roundabout", 48, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="at least 16"):
        render_sign("stop", 8, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="roundabout"):
        write_signs("unused", classes=["stop", "roundabout"])


def test_background_photo_is_cropped_behind_the_sign():
    photo = np.zeros((120, 200, 3), np.uint8)
    photo[..., 1] = 255  # a pure green "photo"
    img = render_sign("no_entry", 64, np.random.default_rng(1), background=photo)
    corners = np.concatenate([img[:4, :4], img[:4, -4:]]).reshape(-1, 3).mean(0)
    assert corners[1] > 100 and corners[1] > 2 * corners[2]


def _features(img):
    """Simple features: a HOG of the grey image, a hue-saturation histogram, a colour thumbnail."""
    hog = cv2.HOGDescriptor((48, 48), (16, 16), (8, 8), (8, 8), 9)
    grey = cv2.cvtColor(cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [12, 4], [0, 180, 0, 256]).ravel()
    thumb = cv2.resize(img, (8, 8), interpolation=cv2.INTER_AREA).ravel() / 255.0
    return np.concatenate([hog.compute(grey).ravel(), hist / hist.sum(), thumb])


def test_classes_are_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    def data(per_class, seed):
        x, y = [], []
        for ci, kind in enumerate(SIGN_CLASSES):
            rng = np.random.default_rng([seed, ci])
            for _ in range(per_class):
                x.append(_features(render_sign(kind, 48, rng)))
                y.append(ci)
        return np.array(x), np.array(y)

    x_train, y_train = data(40, 1)
    x_test, y_test = data(20, 2)
    # One BLAS thread: on a busy machine more threads make the fit much slower, not faster.
    with threadpool_limits(1):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300)).fit(x_train, y_train)
        accuracy = clf.score(x_test, y_test)
    # Chance is 10%. A linear model cannot read 30/50/70 or arrow directions under this much
    # jitter (a small CNN does), but must tell the shapes and colours apart.
    assert accuracy > 0.5, accuracy


def test_write_signs_counts_and_files(tmp_path):
    counts = write_signs(tmp_path / "ds", per_class=3, size=32, seed=5)
    assert counts == {k: 3 for k in SIGN_CLASSES}
    for kind in SIGN_CLASSES:
        files = sorted((tmp_path / "ds" / kind).glob("*.png"))
        assert [f.name for f in files] == [f"{kind}_{i:04d}.png" for i in range(3)]
        assert cv2.imread(str(files[0])).shape == (32, 32, 3)
    # Each class draws from its own generator, so a subset writes the same images.
    write_signs(tmp_path / "sub", per_class=3, size=32, seed=5, classes=["yield"])
    assert (tmp_path / "sub" / "yield" / "yield_0002.png").read_bytes() == (tmp_path / "ds" / "yield" / "yield_0002.png").read_bytes()


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_drive_video_and_its_timeline(tmp_path):
    size, fps = (320, 180), 8
    timeline = make_drive_video(tmp_path / "drive.mp4", seconds=20, fps=fps, size=size, seed=1)
    frames = _read_video(tmp_path / "drive.mp4")
    assert len(frames) == 20 * fps and frames[0].shape == (180, 320, 3)
    assert not (tmp_path / ".drive.partial.mp4").exists()

    saved = json.loads((tmp_path / "drive.json").read_text())
    assert saved["signs"] == timeline and saved["frames"] == 20 * fps and saved["size"] == list(size)
    roi = drive_roi(size)
    assert saved["roi"] == list(roi)
    rx, ry, rw, rh = roi
    assert rx >= size[0] / 2  # the region is on the right, beside the road

    assert {s["label"] for s in timeline} == set(SIGN_CLASSES)
    previous_end = -1
    for s in timeline:
        assert previous_end < s["start_frame"] <= s["end_frame"] < len(frames)
        assert 1.2 <= (s["end_frame"] - s["start_frame"] + 1) / fps <= 3.0
        previous_end = s["end_frame"]
        x, y, w, h = s["bbox_at_end"]
        assert s["roi"] == list(roi)
        # By the time the car passes it, the sign fills most of the region of interest.
        assert rx - 2 <= x and x + w <= rx + rw + 2 and ry - 2 <= y and y + h <= ry + rh + 2
        assert w * h > 0.6 * rw * rh
    # The region changes when a sign comes into view.
    first = timeline[0]
    passing, before = (frames[i][ry : ry + rh, rx : rx + rw].astype(np.float32) for i in (first["end_frame"], first["start_frame"] - 1))
    assert np.abs(passing - before).mean() > 20


def test_drive_video_rejects_bad_numbers(tmp_path):
    with pytest.raises(ConfigError, match="positive"):
        make_drive_video(tmp_path / "v.mp4", seconds=0)
    with pytest.raises(ConfigError, match="sign_size"):
        make_drive_video(tmp_path / "v.mp4", sign_size=(0.9, 0.5))
    assert not list(tmp_path.iterdir())


def test_cli_writes_traffic_signs_and_a_video(tmp_path, capsys):
    out = tmp_path / "signs"
    args = ["datasets", "synth", out, "--kind", "traffic-signs", "--per-class", "3", "--size", "48", "--video", out / "drive.mp4", "--video-seconds", "4"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"wrote 30 images in 10 classes to {out}" in stdout and "drive.mp4 (2 signs)" in stdout
    assert len(list((out / "turn_left").glob("*.png"))) == 3
    assert len(_read_video(out / "drive.mp4")) == 60
    assert len(json.loads((out / "drive.json").read_text())["signs"]) == 2


def test_cli_video_needs_traffic_signs(tmp_path, capsys):
    code, _, err = run_cli(["datasets", "synth", tmp_path / "s", "--video", tmp_path / "v.mp4"], capsys)
    assert code == 1 and "--kind traffic-signs" in err
    assert not (tmp_path / "v.mp4").exists()
