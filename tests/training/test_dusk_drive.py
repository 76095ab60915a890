"""The dusk drive: the daylight drive of the same seed, darker, bluer and noisier."""

import json

import cv2
import numpy as np

from tests.conftest import run_cli
from edgesight.training.synth import make_drive_video


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames).astype(np.float64)


def test_dusk_is_darker_bluer_and_noisier_than_daylight(tmp_path):
    day_timeline = make_drive_video(tmp_path / "day.mp4", seconds=4, fps=5, size=(160, 90), seed=1)
    dusk_timeline = make_drive_video(tmp_path / "dusk.mp4", seconds=4, fps=5, size=(160, 90), seed=1, dusk=True)
    assert dusk_timeline == day_timeline  # the same road, signs and timeline
    assert json.loads((tmp_path / "dusk.json").read_text())["lighting"] == "dusk"
    day, dusk = _frames(tmp_path / "day.mp4"), _frames(tmp_path / "dusk.mp4")
    assert day.shape == dusk.shape == (20, 90, 160, 3)

    def grey(f):
        return (f @ [0.114, 0.587, 0.299]).mean()  # BGR

    def blue_over_red(f):
        return f[..., 0].mean() / f[..., 2].mean()

    def sky_noise(f):
        # The top-left corner is sky in every frame of this seed: what changes there from one
        # frame to the next is sensor noise (and the slow exposure drift, far smaller).
        return np.diff(f[:, :12, :60], axis=0).std() / np.sqrt(2)

    assert grey(dusk) < 0.4 * grey(day)  # about 0.26 here
    assert blue_over_red(dusk) > 1.5 * blue_over_red(day)  # about 1.8 times
    assert sky_noise(dusk) > 2 * sky_noise(day)  # about 4 times, in grey levels, though darker


def test_cli_renders_a_dusk_drive_and_dusk_needs_a_video(tmp_path, capsys):
    out = tmp_path / "signs"
    code, stdout, err = run_cli(["datasets", "synth", out, "--kind", "traffic-signs", "--per-class", "1", "--size", "32",
                                 "--video", tmp_path / "dusk.mp4", "--video-seconds", "2", "--dusk"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "dusk.json").read_text())["lighting"] == "dusk"
    code, _, err = run_cli(["datasets", "synth", tmp_path / "s", "--kind", "traffic-signs", "--dusk"], capsys)
    assert code == 1 and "--dusk is the lighting of the drive video: add --video FILE.mp4" in err
