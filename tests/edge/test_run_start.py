"""``edgesight run`` at start and in its live reports: waiting for a camera that is not ready,
and ``/status`` as one snapshot of a result and the statistics that count it."""

import json

import numpy as np
import cv2
import pytest

from tests.conftest import run_cli

from edgesight.edge.loop import session
from edgesight.edge.sinks import HttpSink
from edgesight.edge.sources import opencv

pytestmark = pytest.mark.slow


class ClosedCapture:
    """A cv2.VideoCapture of a camera that is not there (yet)."""

    def isOpened(self):
        return False

    def release(self):
        pass


def test_run_waits_for_a_camera_then_gives_up_saying_how_long(color_bundle, capsys, monkeypatch, caplog):
    opens = []
    monkeypatch.setattr(opencv, "_open_capture", lambda *a, **k: opens.append(a) or ClosedCapture())
    code, _, err = run_cli(["run", color_bundle, "--source", "0", "--open-timeout", "0.3", "-q"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    waiting = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waiting == ["waiting for camera 0 to open, up to 0.3 s"]
    assert lines[-1].startswith("error: cannot open camera 0:") and "(waited 0.3 s," in lines[-1]
    assert len(opens) >= 2


def test_run_with_open_timeout_0_fails_at_the_first_attempt(color_bundle, capsys, monkeypatch):
    opens = []
    monkeypatch.setattr(opencv, "_open_capture", lambda *a, **k: opens.append(a) or ClosedCapture())
    code, _, err = run_cli(["run", color_bundle, "--source", "0", "--open-timeout", "0", "-q"], capsys)
    assert code == 1 and len(opens) == 1 and "waiting" not in err and "waited" not in err


class StatusProbe(HttpSink):
    """The live view, reading its own /status body after every result and every statistics update."""

    def __init__(self):
        super().__init__(port=0)
        self.seen = []

    def write(self, frame, result, annotated):
        super().write(frame, result, annotated)
        self.seen.append(json.loads(self.status_json()))

    def update_stats(self, stats):
        super().update_stats(stats)
        self.seen.append(json.loads(self.status_json()))


def test_status_pairs_a_result_with_the_statistics_that_count_it(color_bundle, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 64, 3), 60 * i, np.uint8))
    probe = StatusProbe()
    monkeypatch.setattr(session, "make_sinks", lambda cfg, echo, **kw: [probe])
    code, _, err = run_cli(["run", color_bundle, "--source", folder, "--loop", "--max-frames", "300",
                            "--stats-interval", "0.01", "--status-file", tmp_path / "status.json", "-q"], capsys)
    assert code == 0, err
    snapshots = [s for s in probe.seen if s["stats"]]
    assert len(snapshots) >= 2
    for s in snapshots:
        # a folder source numbers its frames 0, 1, 2...: the n-th result counted is frame n-1
        assert s["result"]["frame"] == s["stats"]["frame"] == s["stats"]["frames"] - 1
        assert s["result"]["label"] == s["stats"]["label"]
    final = json.loads((tmp_path / "status.json").read_text())
    assert final["frame"] == final["frames"] - 1 == 299
