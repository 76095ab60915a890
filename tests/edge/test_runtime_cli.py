"""``classify``, ``benchmark`` and the Edge TPU delegate, on a real int8 bundle."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesight.edge.errors import MissingDependencyError
from tests.conftest import run_cli, write_color_dataset

pytestmark = pytest.mark.slow


def test_classify_formats_and_skips_unreadable(color_bundle, tmp_path, capsys):
    data = write_color_dataset(tmp_path / "d", per_class=3, size=16, seed=21)
    (data / "red" / "bad.png").write_bytes(b"")
    code, out, err = run_cli(["classify", color_bundle, data, "--format", "json", "--top-k", "2"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 9 and {"path", "label", "score", "top_k"} <= set(rows[0])
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["label"] == r["label"] for r in rows)
    correct = sum(Path(r["path"]).parent.name == r["label"] for r in rows)
    assert correct >= 8
    assert "bad.png: empty file" in err
    code, out, _ = run_cli(["classify", color_bundle, str(data / "green" / "*.png"), "--format", "csv"], capsys)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 3 and table[0].keys() == {"path", "label", "score", "top_k"}
    code, out, _ = run_cli(["classify", color_bundle, data / "blue" / "blue_000.png"], capsys)
    assert out.splitlines()[0].split() == ["path", "label", "score"] and len(out.splitlines()) == 2


def test_classify_agrees_with_conversion_report(color_bundle, trained_run, capsys):
    from edgesight.training.data import Split

    test = Split.load(trained_run / "split.json").test
    code, out, _ = run_cli(["classify", color_bundle, *[s.path for s in test], "--format", "json"], capsys)
    labels = (color_bundle / "labels.txt").read_text().split()
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    assert [labels.index(r["label"]) for r in json.loads(out)] == report["predictions_quant"]


def test_classify_errors(color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["classify", color_bundle, tmp_path / "nothing-here"], capsys)
    assert code == 1 and "nothing-here: no such file or folder" in err and "error: no images to classify" in err


def test_benchmark_json(color_bundle, tmp_path, capsys):
    code, out, _ = run_cli(["benchmark", color_bundle, "--threads", "1,2", "--runs", "30", "--warmup", "3", "--json", tmp_path / "b.json"], capsys)
    assert code == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    assert [r["threads"] for r in rep["results"]] == [1, 2]
    for r in rep["results"]:
        i = r["invoke_ms"]
        assert 0 < i["min"] <= i["p50"] <= i["p90"] <= i["p99"]
        assert r["end_to_end_ms"]["p50"] >= i["p50"] and r["peak_rss_mb"] > 10
    assert rep["backend"].startswith("ai_edge_litert")


@pytest.mark.hardware
def test_edgetpu_delegate_missing_and_present(monkeypatch):
    import ctypes

    from edgesight.edge.model.interpreter import Backend, edgetpu_delegate, load_backend

    real = load_backend()
    calls = []

    def no_device(lib, options):
        calls.append((lib, options))
        raise ValueError(f"Failed to load delegate from {lib}")

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(MissingDependencyError, match=r"libedgetpu.so.1 could not be loaded \(libedgetpu.so.1: cannot open shared object.*libedgetpu1-std"):
        edgetpu_delegate(Backend(real.name, real.version, real.interpreter_class, no_device))
    assert calls == []  # LiteRT is not asked to load a library that is not there
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    with pytest.raises(MissingDependencyError, match=r"could not be loaded \(Failed to load delegate"):
        edgetpu_delegate(Backend(real.name, real.version, real.interpreter_class, no_device), "usb")
    assert calls == [("libedgetpu.so.1", {"device": "usb"})]
    sentinel = object()
    present = Backend(real.name, real.version, real.interpreter_class, lambda lib, options: sentinel)
    assert edgetpu_delegate(present) is sentinel


def test_runtime_commands_need_no_tensorflow(color_bundle, tmp_path):
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from edgesight.cli import main\n"
        f"main(['classify', {str(color_bundle)!r}, {str(tmp_path)!r}, '--format', 'json'])\n"
    )
    write_color_dataset(tmp_path, per_class=1, size=16)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 3
