"""``run`` on an image folder honours ``--max-pixels`` as ``classify`` does: a large PNG or JPEG
is decoded reduced when the model input is much smaller, one above the limit is skipped with a
warning naming it and counted, and the run goes on."""

import json
import logging

import cv2
import numpy as np
import pytest

from edgesight.edge.sources import open_source
from tests.conftest import run_cli

TOO_LARGE = "4000x3000 is 12.0 megapixels, above the limit of 10; shrink the image or raise --max-pixels"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """big.png (4000x3000, 12 MP), mid.png (2000x1500), small.png (32x32): a few hundred KB."""
    root = tmp_path_factory.mktemp("large") / "shots"
    root.mkdir()
    for name, (w, h) in {"big.png": (4000, 3000), "mid.png": (2000, 1500), "small.png": (32, 32)}.items():
        img = np.full((h, w, 3), (40, 40, 220), np.uint8)
        img[: h // 2] = (40, 200, 40)
        assert cv2.imwrite(str(root / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return root


def _frames(source):
    with source as src:
        frames = []
        while (frame := src.read()) is not None:
            frames.append(frame)
        return frames, src.skipped


def test_a_folder_source_decodes_large_files_reduced_and_skips_those_above_the_limit(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="edgesight.source"):
        frames, skipped = _frames(open_source(str(folder), target=(16, 16), max_pixels=10_000_000, prefetch=0))
    assert [(f.index, f.path, f.image.shape) for f in frames] == [
        (1, str(folder / "mid.png"), (187, 250, 3)),  # 1/8: still at least twice 16x16
        (2, str(folder / "small.png"), (32, 32, 3)),
    ]
    assert frames[0].image[0, 0].tolist() == [40, 200, 40]  # BGR, like a camera frame
    assert skipped == 1
    assert [r.getMessage() for r in caplog.records] == [f"skipping {folder / 'big.png'}: {TOO_LARGE}"]


def test_without_a_target_or_limit_a_folder_source_reads_full_size(folder):
    frames, skipped = _frames(open_source(str(folder), prefetch=0))
    assert [f.image.shape for f in frames] == [(3000, 4000, 3), (1500, 2000, 3), (32, 32, 3)] and skipped == 0


@pytest.mark.slow
def test_run_skips_a_file_above_max_pixels_with_a_counted_warning(color_bundle, folder, tmp_path, capsys, caplog):
    jsonl, stats = tmp_path / "out.jsonl", tmp_path / "stats.json"
    with caplog.at_level(logging.WARNING, logger="edgesight"):
        code, out, err = run_cli(["run", color_bundle, "--source", folder, "--max-pixels", "10000000", "--jsonl", jsonl,
                                  "--stats-json", stats, "--quiet", "--stats-interval", "0"], capsys)
    assert code == 0
    warning = f"skipping {folder / 'big.png'}: {TOO_LARGE}"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [warning]
    assert [line for line in err.splitlines() if line != warning] == []  # the CLI prints the warning, nothing else
    assert out.startswith("2 frames in ") and ", dropped 0, skipped 1 image file, latency p50 " in out
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(e["frame"], e["path"]) for e in events] == [(1, str(folder / "mid.png")), (2, str(folder / "small.png"))]
    assert json.loads(stats.read_text())["skipped"] == 1


@pytest.mark.slow
def test_run_classifies_it_when_max_pixels_is_raised(color_bundle, folder, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    code, out, err = run_cli(["run", color_bundle, "--source", folder, "--max-pixels", "20000000", "--stats-json", stats,
                              "--quiet", "--stats-interval", "0"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("3 frames in ") and "skipped" not in out
    assert json.loads(stats.read_text())["skipped"] == 0


@pytest.mark.slow
def test_run_with_roi_keeps_the_file_full_size(color_bundle, folder, tmp_path, capsys):
    # --roi counts the file's own pixels, so the frame is not reduced: the window still fits it
    code, out, err = run_cli(["run", color_bundle, "--source", folder / "big.png", "--max-pixels", "20000000",
                              "--roi", "0,0,3000,3000", "--quiet", "--stats-interval", "0"], capsys)
    assert (code, err) == (0, "") and out.startswith("1 frames in ")


@pytest.mark.slow
def test_the_api_stream_takes_the_classifiers_max_pixels(color_bundle, folder, caplog):
    from edgesight.edge.classifier import Classifier

    with caplog.at_level(logging.WARNING, logger="edgesight.source"):
        results = list(Classifier(color_bundle, max_pixels=10_000_000).stream(str(folder)))
    assert [r.path for r in results] == [str(folder / "mid.png"), str(folder / "small.png")]
    assert [r.getMessage() for r in caplog.records] == [f"skipping {folder / 'big.png'}: {TOO_LARGE}"]
