"""``edgesight run`` refuses a bad output path or ROI before it creates any output."""

from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_roi_outside_the_frame_leaves_no_output(color_bundle, tmp_path, capsys):
    outputs = ["--jsonl", tmp_path / "e.jsonl", "--stats-json", tmp_path / "s.json", "--status-file", tmp_path / "st.json",
               "--save", tmp_path / "v" / "out.avi"]
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic:64x48", "--roi", "5000,5000,10,10", "--max-frames", "3", *outputs], capsys)
    assert code == 1
    assert "--roi 5000,5000,10,10 lies outside the 64x48 frame" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_roi_inside_the_frame_classifies_every_frame(color_bundle, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2
    import numpy as np

    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 64, 3), 200, np.uint8))
    code, out, err = run_cli(["run", color_bundle, "--source", folder, "--roi", "0,0,32,24", "--jsonl", tmp_path / "e.jsonl", "-q"], capsys)
    assert code == 0, err
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("flag", ["--save", "--jsonl", "--stats-json", "--status-file"])
def test_an_output_under_a_file_is_refused_before_the_first_frame(color_bundle, tmp_path, capsys, flag):
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    target = blocker / ("x.mp4" if flag == "--save" else "x.json")
    other = tmp_path / "other.jsonl"
    extra = [] if flag == "--jsonl" else ["--jsonl", other]
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic:64x48", "--max-frames", "2", flag, target, *extra], capsys)
    assert code == 1
    line = _one_line(err)
    assert line.startswith(f"error: {flag} {target}") or f"{flag} {target}" in line
    assert "is a file, not a folder" in line
    assert blocker.read_text() == "keep" and not other.exists()


def test_an_unwritable_location_is_refused(color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic:64x48", "--max-frames", "2", "--save", "/proc/x.mp4",
                            "--jsonl", tmp_path / "e.jsonl"], capsys)
    assert code == 1
    line = _one_line(err)
    assert "--save /proc/x.mp4" in line and "cannot write in /proc" in line
    assert not (tmp_path / "e.jsonl").exists()


def test_a_folder_given_as_an_output_file_is_refused(color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["run", color_bundle, "--source", "synthetic:64x48", "--max-frames", "2", "--stats-json", tmp_path], capsys)
    assert code == 1
    assert f"--stats-json {tmp_path}: is a folder" in _one_line(err)
    assert list(tmp_path.iterdir()) == []
