import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import DatasetError
from tests.conftest import add_bad_files, write_color_dataset
from edgesight.training.data import Split, check_image, make_split, scan_dataset


def _img(path: Path, value: int = 100, ext_ok=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix.lower() if ext_ok else ".png", np.full((12, 12, 3), value, np.uint8))
    path.write_bytes(buf.tobytes())


def test_class_folders_with_mixed_extensions(tmp_path):
    for i, ext in enumerate(["JPG", "jpeg", "Png", "bmp", "webp", "TIF", "tiff"]):
        _img(tmp_path / "cat" / f"c{i}.{ext}")
        _img(tmp_path / "dog" / "nested" / f"d{i}.{ext}")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / ".hidden_class").mkdir()
    s = scan_dataset(tmp_path, progress=False)
    assert s.layout == "folders"
    assert s.classes == ("cat", "dog")
    assert len(s.given["all"]) == 14
    assert s.skipped == []


def test_bad_files_are_skipped_and_listed(tmp_path):
    write_color_dataset(tmp_path, per_class=4, size=12)
    expected = add_bad_files(tmp_path / "red")
    s = scan_dataset(tmp_path, progress=False)
    reasons = {Path(p).name: r for p, r in s.skipped}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert len(s.given["all"]) == 12


def test_check_image_reasons(tmp_path):
    add_bad_files(tmp_path)
    assert check_image(str(tmp_path / "empty.png")) == "empty file (0 bytes)"
    assert check_image(str(tmp_path / "notes.jpg")) == "not an image file (unrecognised format)"
    assert check_image(str(tmp_path / "truncated.jpg")).startswith("corrupt or truncated image")
    _img(tmp_path / "ok.png")
    assert check_image(str(tmp_path / "ok.png")) is None


def test_presplit_layout_with_valid_alias(tmp_path):
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _img(tmp_path / split / c / f"{i}.png")
    s = scan_dataset(tmp_path, progress=False)
    assert s.layout == "presplit"
    sp = make_split(s, 0.1, 0.1, seed=3)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (8, 4, 4)
    assert all("/valid/" in x.path for x in sp.val)


def test_presplit_without_val_carves_it_from_train(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _img(tmp_path / "train" / c / f"{i}.png")
    sp = make_split(scan_dataset(tmp_path, progress=False), 0.2, 0.1, seed=0)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (16, 4, 0)
    assert not {x.path for x in sp.train} & {x.path for x in sp.val}


def test_csv_manifest(tmp_path):
    for c in ("x", "y"):
        for i in range(3):
            _img(tmp_path / "imgs" / f"{c}{i}.png")
    rows = ["path,label"] + [f"imgs/{c}{i}.png,{c}" for c in "xy" for i in range(3)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n\n")
    s = scan_dataset(tmp_path / "m.csv", progress=False)
    assert s.layout == "csv" and s.classes == ("x", "y") and len(s.given["all"]) == 6


def test_csv_with_split_column(tmp_path):
    rows = []
    for c in ("x", "y"):
        for i, split in enumerate(["train", "train", "val", "test"]):
            _img(tmp_path / f"{c}{i}.png")
            rows.append(f"{c}{i}.png,{c},{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows))
    sp = make_split(scan_dataset(tmp_path / "m.csv", progress=False), 0.1, 0.1, 0)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (4, 2, 2)


def test_csv_row_without_file_is_an_error(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("a.png,cat\nb.png,dog\n")
    with pytest.raises(DatasetError, match=r"m.csv:2: label 'dog' points to .*b.png, which does not exist"):
        scan_dataset(tmp_path / "m.csv", progress=False)
    (tmp_path / "n.csv").write_text("a.png,\n")
    with pytest.raises(DatasetError, match=r"n.csv:1: expected 'path,label'"):
        scan_dataset(tmp_path / "n.csv", progress=False)


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda r: None, "the folder is empty"),
        (lambda r: _img(r / "loose.png"), "no class sub-folders \\(found 1 loose images\\)"),
        (lambda r: [_img(r / "only" / f"{i}.png") for i in range(3)], "only 1 class found \\(only\\)"),
        (lambda r: ([_img(r / "a" / f"{i}.png") for i in range(3)], (r / "b").mkdir()), "b: class folder has no images"),
        (lambda r: ([_img(r / "a" / f"{i}.png") for i in range(3)], _img(r / "b" / "0.png")), r"class 'b' has 1 image\(s\); each class needs at least 2"),
    ],
)
def test_dataset_errors(tmp_path, setup, match):
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    with pytest.raises(DatasetError, match=match):
        scan_dataset(root, progress=False)


def test_class_emptied_by_corrupt_files_names_it(tmp_path):
    write_color_dataset(tmp_path, per_class=3, size=12, classes={"red": (0, 0, 255), "blue": (255, 0, 0)})
    for p in (tmp_path / "blue").iterdir():
        p.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"blue: class 'blue' has 0 usable image\(s\) of 3"):
        scan_dataset(tmp_path, progress=False)


def test_too_few_images_mentions_skipped_files_only_when_some_were(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _img(root / "a" / f"{i}.png")
    _img(root / "b" / "0.png")
    with pytest.raises(DatasetError) as e:
        scan_dataset(root, progress=False)
    assert str(e.value) == f"{root}/b: class 'b' has 1 image(s); each class needs at least 2: add images or remove the class"
    (root / "b" / "1.png").write_bytes(b"")
    (root / "b" / "2.jpg").write_text("not an image")
    with pytest.raises(DatasetError) as e:
        scan_dataset(root, progress=False)
    assert str(e.value) == (f"{root}/b: class 'b' has 1 usable image(s) of 3 (2 skipped as unreadable); "
                            "each class needs at least 2: add images or remove the class")


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="nope: no such file or folder"):
        scan_dataset(tmp_path / "nope", progress=False)


def test_split_is_stratified_deterministic_and_disjoint(tmp_path):
    write_color_dataset(tmp_path, per_class=20, size=8)
    s = scan_dataset(tmp_path, progress=False)
    a = make_split(s, 0.2, 0.1, seed=7)
    b = make_split(s, 0.2, 0.1, seed=7)
    c = make_split(s, 0.2, 0.1, seed=8)
    assert a.to_dict() == b.to_dict()
    assert [x.path for x in a.test] != [x.path for x in c.test]
    counts = a.counts()
    assert all(counts["train"][k] == 14 and counts["val"][k] == 4 and counts["test"][k] == 2 for k in a.classes)
    sets = [{x.path for x in getattr(a, n)} for n in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 60


def test_tiny_classes_keep_a_training_image(tmp_path):
    for c, n in (("a", 2), ("b", 3)):
        for i in range(n):
            _img(tmp_path / c / f"{i}.png")
    sp = make_split(scan_dataset(tmp_path, progress=False), 0.1, 0.1, 0)
    assert sp.counts()["train"] == {"a": 1, "b": 1}
    assert sp.counts()["test"] == {"a": 1, "b": 1}


def test_split_json_round_trip(tmp_path):
    write_color_dataset(tmp_path / "d", per_class=5, size=8)
    sp = make_split(scan_dataset(tmp_path / "d", progress=False), 0.2, 0.2, 1)
    sp.save(tmp_path / "split.json")
    d = json.loads((tmp_path / "split.json").read_text())
    assert d["train"][0][0].startswith(("red/", "green/", "blue/"))  # stored relative to the root
    back = Split.load(tmp_path / "split.json")
    assert back.to_dict() == sp.to_dict()
    assert Path(back.test[0].path).is_absolute() and Path(back.test[0].path).exists()


def test_bad_fractions(tmp_path):
    write_color_dataset(tmp_path, per_class=3, size=8)
    s = scan_dataset(tmp_path, progress=False)
    with pytest.raises(DatasetError, match="leave nothing to train on"):
        make_split(s, 0.5, 0.45, 0)
