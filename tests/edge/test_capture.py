"""``run --capture``: the capture folder's layout, its records, sampling, the size cap and safe names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli

from edgesight.edge.captures import LOG_FILE, UNCERTAIN_DIR, folder_name, read_records
from edgesight.edge.errors import ConfigError
from edgesight.edge.frames import Frame, Result
from edgesight.edge.loop.config import RunConfig
from edgesight.edge.sinks import CaptureSink

LABELS = ["stop", "yield", "../evil", UNCERTAIN_DIR]
RECORD_KEYS = {"time", "frame", "model_sha256", "label", "score", "top_k", "source", "file", "reason"}


def feed(sink, i, top, t=None, reported=None, image=None):
    """Hand ``sink`` frame ``i`` classified as ``top`` ((label, score) pairs) at capture time ``t``."""
    t = float(i) if t is None else t
    img = image if image is not None else np.full((24, 32, 3), (i * 7) % 256, np.uint8)
    frame = Frame(image=img, index=i, timestamp=t, wall_time=1_800_000_000 + t)
    label = reported or top[0][0]
    sink.write(frame, Result(i, t, 1_800_000_000 + t, label, top[0][1], list(top), 1.0), None)


def test_layout_and_records(tmp_path):
    sink = CaptureSink(tmp_path / "cap", LABELS, model_sha256="ab" * 32, source="rtsp://cam/1", every=0, random=0)
    feed(sink, 0, [("stop", 0.9), ("yield", 0.05)])                   # confident: stop/
    feed(sink, 1, [("yield", 0.45), ("stop", 0.3)])                   # under --capture-below
    feed(sink, 2, [("stop", 0.52), ("yield", 0.48)])                  # top-1 leads by less than the margin
    feed(sink, 3, [("stop", 0.8), ("yield", 0.1)], reported="unknown")  # under --threshold
    feed(sink, 4, [("../evil", 0.95), ("stop", 0.01)])                # a label that is no folder name
    feed(sink, 5, [(UNCERTAIN_DIR, 0.95), ("stop", 0.01)])           # a label named like the reserved folder
    sink.close()
    records = read_records(tmp_path / "cap")
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert [r["file"].split("/")[0] for r in records] == ["stop", UNCERTAIN_DIR, UNCERTAIN_DIR, UNCERTAIN_DIR, "_evil", "_uncertain_"]
    assert [r["reason"] for r in records] == ["label", "uncertain", "uncertain", "uncertain", "label", "label"]
    r = records[1]
    assert r["label"] == "yield" and r["score"] == 0.45 and r["top_k"] == [["yield", 0.45], ["stop", 0.3]]
    assert r["model_sha256"] == "ab" * 32 and r["source"] == "rtsp://cam/1" and r["time"] == 1_800_000_001.0
    for r in records:
        path = tmp_path / "cap" / r["file"]
        assert path.parent.parent == tmp_path / "cap"  # one folder deep, inside DIR
        assert cv2.imread(str(path)).shape == (24, 32, 3)
    assert sorted(p.name for p in (tmp_path / "cap").iterdir()) == ["_evil", UNCERTAIN_DIR, "_uncertain_", LOG_FILE, "stop"]
    assert not list((tmp_path / "cap").rglob(".*")), "no temporary files left"
    assert not (tmp_path / "evil").exists()


def test_with_a_roi_the_window_the_model_classified_is_saved(tmp_path):
    from edgesight.edge.loop.session import capture_sink

    image = np.zeros((24, 32, 3), np.uint8)
    image[4:14, 20:30] = 255  # the window: what a retrain must learn from, not the whole scene
    sink = capture_sink(RunConfig(capture=str(tmp_path / "cap"), roi="20,4,10,10", capture_every=0))
    feed(sink, 0, [("stop", 0.9), ("yield", 0.05)], image=image)
    sink.close()
    saved = cv2.imread(str(tmp_path / "cap" / read_records(tmp_path / "cap")[0]["file"]))
    assert saved.shape == (10, 10, 3) and saved.min() > 200


def test_one_frame_per_label_per_interval_and_a_random_share(tmp_path):
    sink = CaptureSink(tmp_path / "cap", LABELS, every=5, random=0)
    for i in range(21):  # one frame a second, 21 s
        feed(sink, i, [("stop", 0.9), ("yield", 0.05)])
        feed(sink, 100 + i, [("stop", 0.4), ("yield", 0.3)], t=float(i))  # uncertain stops, sampled apart
        feed(sink, 200 + i, [("yield", 0.9), ("stop", 0.05)], t=float(i) + 0.5)
    records = read_records(tmp_path / "cap")
    assert [r["frame"] for r in records if r["file"].startswith("stop/")] == [0, 5, 10, 15, 20]
    assert [r["frame"] for r in records if r["file"].startswith("_uncertain/")] == [100, 105, 110, 115, 120]
    assert [r["frame"] for r in records if r["file"].startswith("yield/")] == [200, 205, 210, 215, 220]

    everything = CaptureSink(tmp_path / "all", LABELS, every=3600, random=1.0)
    for i in range(6):
        feed(everything, i, [("stop", 0.9), ("yield", 0.05)])
    assert [r["reason"] for r in read_records(tmp_path / "all")] == ["label"] + ["random"] * 5

    some = CaptureSink(tmp_path / "some", LABELS, every=3600, random=0.1, seed=3)
    for i in range(2000):
        feed(some, i, [("stop", 0.9), ("yield", 0.05)])
    assert 150 < sum(r["reason"] == "random" for r in read_records(tmp_path / "some")) < 250


def test_label_filter_and_the_size_cap_deleting_the_oldest(tmp_path):
    rng = np.random.default_rng(0)
    sink = CaptureSink(tmp_path / "cap", LABELS, every=0, random=0, max_mb=0.05, only=["stop", "unknown"])
    for i in range(40):
        noise = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)  # ~10 kB as JPEG
        top = [("stop", 0.9), ("yield", 0.05)] if i % 3 else [("yield", 0.9), ("stop", 0.05)]
        feed(sink, i, top, reported="unknown" if i % 3 == 2 else None, image=noise)
    sink.close()
    files = sorted((tmp_path / "cap").rglob("*.jpg"), key=lambda p: p.name)
    total = sum(p.stat().st_size for p in files)
    assert sink.saved == 26 and sink.deleted == sink.saved - len(files) > 0
    assert total <= 0.05 * 2**20
    assert {p.parent.name for p in files} == {"stop", UNCERTAIN_DIR}  # no yield: filtered out
    assert files[-1].stem.endswith("00000038")  # the newest frame survives
    assert CaptureSink(tmp_path / "cap", LABELS, max_mb=0.05)._total == total  # a restart counts what is there


def test_a_label_folder_that_leads_out_of_the_capture_folder_is_not_written(tmp_path, caplog):
    (tmp_path / "cap").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cap" / "stop")
    sink = CaptureSink(tmp_path / "cap", LABELS, every=0)
    with caplog.at_level("ERROR", logger="edgesight.sinks"):
        feed(sink, 0, [("stop", 0.9), ("yield", 0.05)])
    assert sink.disabled and "leaves" in caplog.text
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize("label, folder", [("stop", "stop"), ("a/b", "a_b"), ("..", "_"), (".hidden", "hidden"),
                                           ("x\ny", "x_y"), ("C:\\x", "C__x"), ("Vorfahrt achten", "Vorfahrt achten")])
def test_folder_names_are_plain(label, folder):
    assert folder_name(label) == folder


def test_review_options_are_the_older_names_of_capture(tmp_path):
    cfg = RunConfig(review_dir=str(tmp_path / "r"), review_label=["defect"], review_max_mb=64.0)
    assert (cfg.capture_dir, cfg.capture_labels, cfg.capture_cap_mb) == (str(tmp_path / "r"), ("defect",), 64.0)
    assert RunConfig(review_dir="r").capture_dir == "r"  # without labels: every label
    assert RunConfig(capture="c").capture_cap_mb == 512.0
    with pytest.raises(ConfigError, match="--capture-label needs --capture DIR"):
        RunConfig(capture_label=["stop"])
    with pytest.raises(ConfigError, match="--capture and --review-dir name two folders"):
        RunConfig(capture="a", review_dir="b")


@pytest.mark.slow
def test_run_capture_writes_a_dataset_that_train_reads(color_bundle, color_data, tmp_path, capsys):
    from edgesight.edge.model.bundle import sha256_file
    from edgesight.training.data import scan_dataset

    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("red", "green"):
        for p in sorted((color_data / name).iterdir())[:4]:
            (frames / f"{name}-{p.name}").write_bytes(p.read_bytes())
    code, _, err = run_cli(["run", color_bundle, "--source", frames, "--capture", tmp_path / "cap", "--capture-every", 0,
                            "--capture-below", 0, "--capture-margin", 0, "-q"], capsys)
    assert code == 0, err
    records = read_records(tmp_path / "cap")
    assert len(records) == 8 and all(set(r) == RECORD_KEYS for r in records)
    assert {r["model_sha256"] for r in records} == {sha256_file(color_bundle / "model.tflite")}
    assert {r["source"] for r in records} == {str(frames)}
    for r in records:
        assert (tmp_path / "cap" / r["file"]).is_file()
        assert r["file"].split("/")[0] == (UNCERTAIN_DIR if r["reason"] == "uncertain" else r["label"])
    # --capture-below 1 sends everything to _uncertain/; the older --review-dir names the same option
    code, _, err = run_cli(["run", color_bundle, "--source", frames, "--review-dir", tmp_path / "old", "--review-label", "red",
                            "--capture-every", 0, "--capture-below", 1, "-q"], capsys)
    assert code == 0, err
    old = read_records(tmp_path / "old")
    assert old and {r["file"].split("/")[0] for r in old} == {UNCERTAIN_DIR} and {r["label"] for r in old} <= {"red"}
    code, _, err = run_cli(["run", color_bundle, "--source", frames, "--capture", tmp_path / "x", "--capture-label", "purple"], capsys)
    assert code == 1 and "--capture-label purple: not a label of this model" in err
    # a capture folder with some confident frames is a dataset as it is; _uncertain/ is not a class
    (tmp_path / "cap" / UNCERTAIN_DIR).mkdir(exist_ok=True)
    (tmp_path / "cap" / UNCERTAIN_DIR / "x.jpg").write_bytes((tmp_path / "cap" / records[0]["file"]).read_bytes())
    assert {r["label"] for r in records} == {"red", "green"}
    scanned = scan_dataset(tmp_path / "cap", progress=False)
    assert scanned.classes == ("green", "red") and scanned.num_images == 8
    assert any(UNCERTAIN_DIR in path for path, _ in scanned.skipped)


@pytest.mark.slow
def test_stream_captures_too(color_bundle, color_data, tmp_path):
    from edgesight.edge.classifier import Classifier

    folder = color_data / "blue"
    with Classifier(color_bundle) as clf:
        results = list(clf.stream(folder, max_frames=12, capture=str(tmp_path / "cap"), capture_every=0))
    records = read_records(tmp_path / "cap")
    assert len(results) == 12 and [r["frame"] for r in records] == [r.frame_index for r in results]
    assert all((tmp_path / "cap" / r["file"]).is_file() for r in records)
    assert json.loads((tmp_path / "cap" / LOG_FILE).read_text().splitlines()[0])["source"] == str(folder)
