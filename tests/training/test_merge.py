"""``edgesight datasets merge``: captures into a dataset without duplicates, unlabelled frames or test images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli, write_color_dataset

from edgesight.edge.captures import LOG_FILE, UNCERTAIN_DIR
from edgesight.training.data import Split, make_split, scan_dataset
from edgesight.training.merge import merge_captures


def capture(folder: Path, name: str, bgr, seed: int, label: str, reason: str = "label") -> Path:
    """A capture file as ``run --capture`` leaves it, with its record."""
    rng = np.random.default_rng(seed)
    img = np.clip(np.full((24, 24, 3), bgr, np.float32) + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
    sub = UNCERTAIN_DIR if reason == "uncertain" else label
    path = folder / sub / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    record = {"time": 1.0 + seed, "frame": seed, "model_sha256": "0" * 64, "label": label, "score": 0.9,
              "top_k": [[label, 0.9]], "source": "0", "file": f"{sub}/{name}", "reason": reason}
    with open(folder / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def captures(tmp_path):
    """Five new red frames, two copies of dataset images, two uncertain frames of which one was relabelled."""
    cap = tmp_path / "cap"
    for i in range(5):
        capture(cap, f"r{i}.jpg", (40, 40, 220), 100 + i, "red")
    cap.joinpath("green").mkdir()
    u1 = capture(cap, "u1.jpg", (40, 200, 40), 200, "blue", reason="uncertain")
    capture(cap, "u2.jpg", (40, 200, 40), 201, "blue", reason="uncertain")
    # relabelled on the review page: moved from _uncertain/ into a class folder, and recorded
    shutil.move(u1, cap / "green" / u1.name)
    with open(cap / LOG_FILE, "a") as f:
        f.write(json.dumps({"file": f"{UNCERTAIN_DIR}/u1.jpg", "relabelled": "green", "from": "blue", "time": 9.0}) + "\n")
    return cap


def _rel(split: Split, root: Path):
    return {name: sorted(str(Path(s.path).relative_to(root.resolve())) for s in split.samples(name)) for name in ("train", "val", "test")}


def test_merge_adds_new_frames_once_and_keeps_the_test_split(tmp_path, captures, capsys):
    data = write_color_dataset(tmp_path / "data", per_class=10)
    for name in ("red_000.png", "red_001.png"):  # frames the dataset already has, byte for byte
        shutil.copy(data / "red" / name, captures / "red" / f"dup-{name}")
    before = _rel(make_split(scan_dataset(data, progress=False)), data)

    code, out, err = run_cli(["datasets", "merge", captures, "--into", data, "--dry-run"], capsys)
    assert code == 0, err
    assert "would add 6 images" in out and not (data / "split.json").exists()
    assert sorted(p.name for p in (data / "red").iterdir()) == [f"red_{i:03d}.png" for i in range(10)]

    code, out, err = run_cli(["datasets", "merge", captures, "--into", data, "--val-share", "0.2"], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows == {"blue": ["0", "0", "0", "1"], "green": ["1", "0", "0", "0"], "red": ["5", "1", "2", "0"]}
    assert "added 6 images" in out
    assert sorted(p.name for p in (data / "red").iterdir() if p.suffix == ".jpg") == [f"r{i}.jpg" for i in range(5)]
    assert (data / "green" / "u1.jpg").is_file() and not list(data.rglob("u2.jpg"))

    after = _rel(make_split(scan_dataset(data, progress=False)), data)
    assert after["test"] == before["test"]
    new_val = set(after["val"]) - set(before["val"])
    assert len(new_val) == 1 and new_val.pop().startswith("red/r")  # 20% of the 5 added reds
    added = {n for s in ("train", "val") for n in after[s]} - {n for s in ("train", "val") for n in before[s]}
    assert added == {f"red/r{i}.jpg" for i in range(5)} | {"green/u1.jpg"}

    code, out, err = run_cli(["datasets", "merge", captures, "--into", data], capsys)
    assert code == 0 and "added 0 images" in out  # merging again adds nothing: all duplicates
    assert _rel(make_split(scan_dataset(data, progress=False)), data) == after


def test_a_class_the_dataset_lacks_is_refused_in_one_line(tmp_path, captures, capsys):
    data = write_color_dataset(tmp_path / "data", per_class=6, classes={"red": (40, 40, 220), "blue": (220, 60, 30)})
    code, out, err = run_cli(["datasets", "merge", captures, "--into", data], capsys)
    assert code == 1 and out == ""
    assert err.strip() == (f"error: {captures}: 'green' is not a class of {data} (blue, red); relabel those captures into "
                           "the dataset's classes, or pass --new-classes to add them")
    assert not (data / "split.json").exists() and not list(data.rglob("*.jpg"))
    code, out, err = run_cli(["datasets", "merge", captures, "--into", data, "--new-classes"], capsys)
    assert code == 0 and "new classes: green" in out and (data / "green" / "u1.jpg").is_file()


def test_a_presplit_dataset_gets_train_and_val_images_only(tmp_path, captures):
    data = tmp_path / "data"
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        write_color_dataset(data / split, per_class=n, seed=len(split))
    test_before = sorted(p.relative_to(data) for p in (data / "test").rglob("*"))
    report = merge_captures(captures, data, val_share=0.4)
    assert sorted(p.relative_to(data) for p in (data / "test").rglob("*")) == test_before
    assert report.added == {"red": 3, "green": 1} and report.added_val == {"red": 2}
    assert len(list((data / "val" / "red").glob("*.jpg"))) == 2 and len(list((data / "train" / "red").glob("*.jpg"))) == 3
    assert not (data / "split.json").exists()


def test_a_copy_of_the_dataset_keeps_the_split_of_the_run_trained_on_the_original(tmp_path, captures, capsys):
    original = write_color_dataset(tmp_path / "data", per_class=10)
    split = make_split(scan_dataset(original, progress=False), 0.2, 0.2, 7)
    (tmp_path / "run").mkdir()
    split.save(tmp_path / "run" / "split.json")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    code, out, err = run_cli(["datasets", "merge", captures, "--into", copy, "--run", tmp_path / "run"], capsys)
    assert code == 0 and f"of which {copy} is a copy" in out, err
    kept = Split.load(copy / "split.json")
    assert _rel(kept, copy)["test"] == _rel(split, original)["test"] and kept.seed == 7
    # a dataset that lacks images of the run's split is another dataset: refused as before
    other = write_color_dataset(tmp_path / "other", per_class=3)
    code, out, err = run_cli(["datasets", "merge", captures, "--into", other, "--run", tmp_path / "run"], capsys)
    assert code == 1 and "that run was trained on" in err and not (other / "split.json").exists()


@pytest.mark.slow
def test_the_test_split_of_a_run_stays_after_merge_and_train(tmp_path, captures, capsys):
    data = write_color_dataset(tmp_path / "data", per_class=10)
    common = ["--model", "cnn_small", "--img-size", 16, "--epochs", 1, "--batch-size", 8, "--alpha", 0.5, "--seed", 5,
              "--test-split", 0.2, "--no-probe"]
    code, _, err = run_cli(["train", data, "--out", tmp_path / "run1", *common], capsys)
    assert code == 0, err
    code, out, err = run_cli(["datasets", "merge", captures, "--into", data, "--run", tmp_path / "run1"], capsys)
    assert code == 0 and f"as {tmp_path / 'run1'} split them" in out, err
    code, _, err = run_cli(["train", data, "--out", tmp_path / "run2", *common], capsys)
    assert code == 0, err
    one, two = (json.loads((tmp_path / run / "split.json").read_text()) for run in ("run1", "run2"))
    assert two["test"] == one["test"] and len(one["test"]) == 6
    assert {p for p, _ in two["train"] + two["val"]} - {p for p, _ in one["train"] + one["val"]} == \
        {f"red/r{i}.jpg" for i in range(5)} | {"green/u1.jpg"}
