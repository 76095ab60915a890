import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import DatasetError
from edgesight.training.data import make_split, scan_dataset, unlabelled_images, write_skipped


def _img(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.full((12, 12, 3), value, np.uint8))
    path.write_bytes(buf.tobytes())


def _dataset(root: Path, per_class: int = 3) -> None:
    for c, v in (("go", 50), ("stop", 200)):
        for i in range(per_class):
            _img(root / c / f"{i}.png", v)


def test_a_link_loop_adds_nothing_and_is_listed(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    os.symlink("..", data / "stop" / "loop")
    s = scan_dataset(data, progress=False)
    counts = {c: sum(1 for x in s.given["all"] if x.label == c) for c in s.classes}
    assert counts == {"go": 3, "stop": 3}
    assert len({x.path for x in s.given["all"]}) == 6
    assert s.skipped == [(str(data / "stop" / "loop"),
                          f"symbolic link to {data.resolve()}, which is already scanned (a link loop or a duplicate): not followed")]
    split = make_split(s, 0.0, 0.0)
    write_skipped(tmp_path / "skipped.txt", split.skipped)
    assert (tmp_path / "skipped.txt").read_text().startswith(f"{data / 'stop' / 'loop'}\tsymbolic link to ")


def test_links_out_of_the_dataset_are_not_followed(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    _img(tmp_path / "elsewhere" / "x.png")
    os.symlink(tmp_path / "elsewhere", data / "go" / "more")
    os.symlink(tmp_path / "elsewhere" / "x.png", data / "go" / "x.png")
    s = scan_dataset(data, progress=False)
    assert len(s.given["all"]) == 6
    reasons = dict(s.skipped)
    assert reasons[str(data / "go" / "more")] == (
        f"symbolic link to {(tmp_path / 'elsewhere').resolve()}, outside the dataset ({data.resolve()}): not followed")
    assert "outside the dataset" in reasons[str(data / "go" / "x.png")]


def test_a_link_into_another_class_does_not_copy_its_images(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    os.symlink("../go", data / "stop" / "go_too")
    os.symlink("../go/0.png", data / "stop" / "dup.png")
    s = scan_dataset(data, progress=False)
    assert sorted((Path(x.path).name, x.label) for x in s.given["all"] if x.label == "stop") == [
        ("0.png", "stop"), ("1.png", "stop"), ("2.png", "stop")]
    assert {Path(p).name for p, _ in s.skipped} == {"go_too", "dup.png"}


def test_links_inside_the_dataset_to_new_places_are_followed(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    _img(data / ".pool" / "extra.png", 200)
    os.symlink("../.pool", data / "stop" / "pool")
    s = scan_dataset(data, progress=False)
    assert sum(1 for x in s.given["all"] if x.label == "stop") == 4
    assert s.skipped == []


def test_unlabelled_images_follow_no_loop(tmp_path):
    _img(tmp_path / "a" / "1.png")
    os.symlink("..", tmp_path / "a" / "up")
    assert len(unlabelled_images(tmp_path)) == 1


@pytest.mark.parametrize("name, problem", [
    ("sto\np", "contains a newline, tab or other control character"),
    ("tab\there", "contains a newline, tab or other control character"),
    ("bell\x07", "contains a newline, tab or other control character"),
    (" stop", "starts or ends with a space"),
])
def test_class_names_labels_txt_cannot_keep_are_refused(tmp_path, name, problem):
    _dataset(tmp_path)
    _img(tmp_path / name / "0.png")
    _img(tmp_path / name / "1.png")
    with pytest.raises(DatasetError) as e:
        scan_dataset(tmp_path, progress=False)
    assert str(e.value) == (
        f"{tmp_path}/{name.encode('unicode_escape').decode()}: class name {name!r} {problem}, which labels.txt and the model metadata cannot keep; "
        "rename the class to printable characters (letters, digits, '_', '-', spaces inside)")
    assert "\n" not in str(e.value)


def test_csv_label_with_a_control_character_is_refused(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "m.csv").write_text("go/0.png,go\ngo/1.png,go\nstop/0.png,st\x1bop\n")
    with pytest.raises(DatasetError, match=r"m\.csv:3: class name 'st\\x1bop' contains a newline"):
        scan_dataset(tmp_path / "m.csv", progress=False)
