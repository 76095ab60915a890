"""The Python API: the README's snippets run as written, and the typed results and checks
behave as documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgesight as es
from tests.conftest import COLORS_BGR, write_color_dataset

ROOT = Path(__file__).resolve().parent.parent
BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"


def readme_snippets():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_has_the_two_snippets():
    snippets = readme_snippets()
    assert len(snippets) == 2
    assert "es.train(" in snippets[0] and "es.convert(" in snippets[0]
    assert "es.Classifier(" in snippets[1] and "clf.stream(" in snippets[1]


@pytest.mark.slow
def test_readme_snippets_run_as_written(tmp_path, monkeypatch):
    write_color_dataset(tmp_path / "data" / "signs", per_class=40, size=32)
    shutil.copy(tmp_path / "data" / "signs" / "red" / "red_000.png", tmp_path / "photo.jpg")
    (tmp_path / "shots").mkdir()
    for name in COLORS_BGR:
        for i in range(5):
            shutil.copy(tmp_path / "data" / "signs" / name / f"{name}_{i:03d}.png", tmp_path / "shots" / f"{name}{i}.png")
    train_snippet, device_snippet = readme_snippets()
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(train_snippet, "README.md (Python API, training)", "exec"), scope)
    assert isinstance(scope["run"], es.TrainedRun) and isinstance(scope["report"], es.ConversionReport)
    assert scope["run"].labels == ("blue", "green", "red") and scope["run"].accuracy >= 0.8
    assert scope["report"].passed and (tmp_path / "models" / "signs-int8" / "model.tflite").is_file()
    # The device snippet runs where TensorFlow cannot be imported.
    r = subprocess.run([sys.executable, "-c", BLOCK_TF + device_snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[0] == "red"
    frames = [line.split() for line in lines[1:]]
    # 5 shots per class in name order; smoothing over 5 frames settles on each class by its
    # last shot, and a frame is never given a class whose shots have not been seen yet.
    assert [int(f[0]) for f in frames] == list(range(15))
    labels = [f[1] for f in frames]
    assert labels[4] == "blue" and labels[9] == "green" and labels[14] == "red"
    assert set(labels[:5]) <= {"blue", "unknown"} and set(labels[5:10]) <= {"blue", "green", "unknown"}


def test_classifier_on_files_frames_and_streams(color_bundle, color_data):
    clf = es.Classifier(color_bundle)
    assert clf.labels == ["blue", "green", "red"]
    path = sorted((color_data / "green").iterdir())[0]
    p = clf(path)
    assert isinstance(p, es.Prediction) and p.label == "green" and p.path == str(path)
    assert len(p.top_k) == 3 and p.top_k[0][0] == "green" and abs(sum(s for _, s in p.top_k) - 1) < 0.02
    frame = cv2.imread(str(path))
    q = clf(frame)
    assert q.label == "green" and q.path is None and abs(q.score - p.score) < 0.02
    assert clf(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)).label == "green"
    assert clf(frame, threshold=1.0).label == "unknown"
    with pytest.raises(es.EdgesightError, match="expected a BGR uint8 image"):
        clf(frame.astype(np.float32))
    results = list(clf.stream(str(color_data / "red"), max_frames=5))
    assert [r.frame_index for r in results] == [0, 1, 2, 3, 4] and {r.label for r in results} == {"red"}


def test_leaving_a_stream_early_stops_its_source(color_bundle):
    clf = es.Classifier(color_bundle)
    seen = []
    for r in clf.stream("synthetic:64x48@200"):
        seen.append(r.frame_index)
        if len(seen) == 3:
            break
    assert len(seen) == 3
    import threading
    assert not any(t.name == "edgesight-stream" for t in threading.enumerate())


def test_api_options_are_checked_like_the_cli(color_bundle, tmp_path):
    clf = es.Classifier(color_bundle)
    with pytest.raises(es.ConfigError, match="threshold must be between 0 and 1, got 2"):
        clf.stream("synthetic", threshold=2)
    with pytest.raises(es.ConfigError, match=r"stream\(\): unknown option\(s\) jsonl"):
        clf.stream("synthetic", jsonl="x.jsonl")
    with pytest.raises(es.ConfigError, match="threads must be at least 1, got 0"):
        es.Classifier(color_bundle, threads=0)
    with pytest.raises(es.ConfigError, match=r"train\(\): unknown key 'epoch'; valid keys are"):
        es.train(tmp_path, out=tmp_path / "run", epoch=3)
    with pytest.raises(es.ConfigError, match=r"convert\(\): num_calib should be an integer, got str 'many'"):
        es.convert(tmp_path, tmp_path / "b", num_calib="many")


def test_a_missing_source_is_raised_in_the_callers_thread(color_bundle, tmp_path):
    clf = es.Classifier(color_bundle)
    with pytest.raises(es.EdgesightError, match="missing.mp4"):
        list(clf.stream(str(tmp_path / "missing.mp4")))


def test_convert_is_the_package_and_the_function():
    import edgesight.convert.config  # noqa: F401  (binds edgesight.convert to the package)

    assert callable(es.convert) and es.convert.config.ConvertConfig is es.ConvertConfig


def test_a_slow_consumer_of_a_live_stream_gets_the_newest_result(color_bundle):
    import time

    clf = es.Classifier(color_bundle)
    got = []
    for r in clf.stream("synthetic:64x48@100", max_frames=40):
        got.append(r.frame_index)
        if len(got) == 4:
            break
        time.sleep(0.2)  # 20 frames arrive meanwhile
    # each result taken after a pause is a recent frame, not the next one in a backlog
    assert all(b - a >= 5 for a, b in zip(got[1:], got[2:])), got


def test_calling_the_classifier_during_a_stream_gives_the_same_labels(color_bundle, color_data):
    clf = es.Classifier(color_bundle)
    files = sorted((color_data / "blue").iterdir())[:6]
    alone = [clf(f).label for f in files]
    during = []
    for r in clf.stream(str(color_data / "red")):
        during.append(clf(files[len(during) % len(files)]).label)
        assert r.label == "red"
    assert during[:6] == alone and len(during) == 20


def test_bad_arguments_are_named(color_bundle):
    clf = es.Classifier(color_bundle)
    with pytest.raises(es.ConfigError, match="device 'gpu' is not cpu, coral"):
        es.Classifier(color_bundle, device="gpu")
    with pytest.raises(es.ConfigError, match="threads should be an integer"):
        es.Classifier(color_bundle, threads="2")
    with pytest.raises(es.ConfigError, match="threshold must be between 0 and 1, got 50"):
        clf(np.zeros((8, 8, 3), np.uint8), threshold=50)
    with pytest.raises(es.ConfigError, match="top_k must be at least 1, got 0"):
        clf(np.zeros((8, 8, 3), np.uint8), top_k=0)
    with pytest.raises(es.EdgesightError, match="cv2.imread returns None"):
        clf(None)
    with pytest.raises(es.EdgesightError, match=r"expected a BGR uint8 image \(HxWx3\), got uint8 \(0, 0, 3\)"):
        clf(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(es.ConfigError, match="threshold must be between 0 and 1"):
        clf.stream("synthetic", threshold=5)  # checked at the call, before iterating
    clf.close()
    with pytest.raises(es.EdgesightError, match="this Classifier is closed"):
        clf(np.zeros((8, 8, 3), np.uint8))
