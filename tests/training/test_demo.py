"""The README's main command in its fast mode: every artefact and the summary."""

import json
from pathlib import Path

import pytest

from edgesight.edge.errors import ConfigError
from tests.conftest import run_cli
from edgesight.demo import AFTER_TRAINING_S, MIN_TRAINING_S, DemoConfig, training_time_limit

pytestmark = pytest.mark.slow


def test_demo_fast_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "demo"
    code, text, err = run_cli(["demo", "--fast", "--out", out, "--classes", "turn_left,turn_right,stop"], capsys)
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["classes"] == ["turn_left", "turn_right", "stop"] and s["config"]["fast"] is True
    for key in ("data", "run", "bundle", "video", "timeline", "events", "annotated"):
        assert Path(s["artefacts"][key]).exists(), key
    assert sorted(p.name for p in (out / "data").iterdir()) == ["stop", "turn_left", "turn_right"]
    assert len(list((out / "data" / "stop").glob("*.png"))) == 8
    assert {"model.keras", "metrics.json", "confusion_matrix.png"} <= {p.name for p in (out / "run").iterdir()}
    assert {"model.tflite", "conversion_report.json"} <= {p.name for p in (out / "model-int8").iterdir()}
    timeline = json.loads((out / "drive.json").read_text())
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert s["video"]["frames"] == len(events) == timeline["frames"] == 60  # 4 s at 15 FPS, every frame
    # The video score, recomputed from the artefacts: every frame of a sign's span in the
    # timeline has an event, and it is correct when the event names that sign. After one epoch
    # the model may get none right, so the count is checked exactly, not against a minimum.
    by_frame = {e["frame"]: e["label"] for e in events}
    assert sorted(by_frame) == list(range(60))
    spans = [(t["label"], range(t["start_frame"], t["end_frame"] + 1)) for t in timeline["signs"]]
    assert len(spans) == 2  # one sign per 2 s
    assert [(p["label"], p["frames"]) for p in s["video"]["signs"]] == [(label, len(r)) for label, r in spans]
    assert s["video"]["sign_frames"] == sum(len(r) for _, r in spans) > 0
    assert s["video"]["correct_frames"] == sum(by_frame[f] == label for label, r in spans for f in r)
    assert s["video"]["accuracy"] == pytest.approx(s["video"]["correct_frames"] / s["video"]["sign_frames"])
    # the README's way to score a run of the video: the same figures from the files alone
    from edgesight.demo import video_score

    score = video_score(out / "events.jsonl", out / "drive.json")
    keys = ("sign_frames", "correct_frames", "accuracy", "signs")
    assert {k: score[k] for k in keys} == {k: s["video"][k] for k in keys}
    assert 0.0 <= s["int8_accuracy"] <= 1.0 and s["test_images"] >= 3
    assert s["fps"] > 0 and s["latency_ms"]["p50"] > 0 and s["model_size_bytes"] < s["float_size_bytes"]
    assert s["epochs_run"] == 1 and s["best_epoch"] == 1 and s["time_limited"] is False
    for line in ("[1/5]", "[5/5]", "summary", "test accuracy", "training          1 of 1 epochs, best 1", "model size", "FPS, latency p50"):
        assert line in text


def test_demo_rejects_unknown_classes():
    with pytest.raises(ConfigError, match="unknown sign class\\(es\\) stopp"):
        DemoConfig(classes=("stopp", "yield"))
    with pytest.raises(ConfigError, match="at least 2"):
        DemoConfig(classes=("stop", "stop"))


def test_demo_training_gets_what_the_time_budget_leaves():
    assert training_time_limit(DemoConfig(), elapsed=12.0) == 300.0 - 12.0 - AFTER_TRAINING_S
    assert training_time_limit(DemoConfig(time_budget=600), elapsed=12.0) == 600.0 - 12.0 - AFTER_TRAINING_S
    assert training_time_limit(DemoConfig(time_budget=60), elapsed=12.0) == MIN_TRAINING_S
    assert training_time_limit(DemoConfig(time_budget=0), elapsed=12.0) == 0.0
    assert training_time_limit(DemoConfig(fast=True), elapsed=12.0) == 0.0
    with pytest.raises(ConfigError, match="--time-budget"):
        DemoConfig(time_budget=-5)


def test_the_full_demo_video_shows_every_class_twice(tmp_path):
    # The video's score rests on 20 signs, so one sign misread on all its frames costs about 5
    # points of it, not 10.
    from edgesight.demo import VIDEO_FPS
    from edgesight.training.synth import SIGN_CLASSES, make_drive_video

    cfg = DemoConfig(seed=3)
    assert cfg.video_seconds == 40.0
    timeline = make_drive_video(tmp_path / "drive.mp4", classes=cfg.classes, seconds=cfg.video_seconds, fps=VIDEO_FPS, size=(160, 90), seed=cfg.seed)
    labels = [t["label"] for t in timeline]
    assert len(labels) == 20 and sorted(labels) == sorted(list(SIGN_CLASSES) * 2)
    assert sorted(labels[:10]) == sorted(SIGN_CLASSES)  # one round of every class, then another
    assert all(a != b for a, b in zip(labels, labels[1:]))
    assert DemoConfig(fast=True, classes=("stop", "yield", "ahead_only")).video_seconds == 4.0
