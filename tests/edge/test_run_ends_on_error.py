"""A run that ends on an error keeps what it counted: statistics and status file, with the error."""

import json

import pytest

from edgesight.edge.errors import SourceError
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

LOST = "rtsp://cam.local/live: the stream ended and did not come back after 3 reconnects"


def _source_failing_after(monkeypatch, frames: int, exc: Exception) -> None:
    """Synthetic frames whose source fails on read ``frames + 1``, as a lost stream does."""
    import edgesight.edge.sources as sources

    real_open = sources.open_source

    def open_failing(spec, **kw):
        src = real_open("synthetic:64x48", **kw)
        read, count = src.read, [0]

        def read_then_fail(*a, **k):
            count[0] += 1
            if count[0] > frames:
                raise exc
            return read(*a, **k)

        src.read = read_then_fail
        return src

    monkeypatch.setattr(sources, "open_source", open_failing)


def test_run_ending_on_a_lost_stream_writes_stats_with_the_error_and_exits_1(color_bundle, tmp_path, capsys, monkeypatch):
    _source_failing_after(monkeypatch, 7, SourceError(LOST))
    stats, status = tmp_path / "s.json", tmp_path / "status.json"
    code, out, err = run_cli(["run", color_bundle, "--source", "rtsp://cam.local/live", "--stats-json", stats,
                              "--status-file", status, "-q"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == f"error: {LOST}"
    assert "Traceback" not in err and "frames in" not in out
    summary = json.loads(stats.read_text())
    assert summary["error"] == LOST and summary["frames"] == 7
    st = json.loads(status.read_text())
    assert st["error"] == LOST and st["finished"] is True and st["frames"] == 7 and st["label"]


def test_any_exception_in_the_loop_is_recorded_on_one_line_and_raised(color_bundle, tmp_path, monkeypatch):
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.session import run_session

    _source_failing_after(monkeypatch, 3, RuntimeError("decoder\nfell over"))
    cfg = RunConfig(source="synthetic", stats_json=str(tmp_path / "s.json"), quiet=True)
    with pytest.raises(RuntimeError, match="decoder"):
        run_session(Classifier(color_bundle), cfg, err=lambda line: None)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["error"] == "RuntimeError: decoder fell over" and summary["frames"] == 3


def test_a_run_refused_before_its_first_frame_writes_no_statistics(color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["run", color_bundle, "--source", tmp_path / "missing.mp4", "--stats-json", tmp_path / "s.json",
                            "--status-file", tmp_path / "status.json"], capsys)
    assert code == 1 and "missing.mp4" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
