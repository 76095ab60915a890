"""Drift: the baseline ``convert`` writes into model.json, its checks, the PSI maths, the rolling
window of the run loop, and the ``drift`` object in the statistics, ``/status`` and MQTT."""

import json
import logging
import re
import shutil
import urllib.request

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.edge.test_sinks import Subscriber, broker, needs_broker  # noqa: F401  (broker: fixture)

from edgesight.edge.classifier import Classifier
from edgesight.edge.errors import BundleError, ConfigError
from edgesight.edge.loop.config import RunConfig
from edgesight.edge.loop.drift import DriftMonitor
from edgesight.edge.model.baseline import Baseline, Stat, compute_baseline, input_stats, psi
from edgesight.edge.model.bundle import load_bundle
from edgesight.edge.model.spec import read_model_info
from edgesight.edge.sinks import HttpSink, MqttSink

BASELINE = {
    "images": 100, "split": "test", "classes": [0.5, 0.3, 0.2],
    "score_edges": [0.0, 0.25, 0.5, 0.75, 1.0], "score_hist": [0.0, 0.1, 0.2, 0.7],
    "threshold": 0.5, "low_share": 0.1, "brightness": {"mean": 120.0, "std": 20.0}, "contrast": {"mean": 40.0, "std": 8.0},
}


# ------------------------------------------------------------------------------------- maths

def test_psi_matches_a_hand_computed_reference():
    # Baseline counts 50/30/20 and window counts 10/30/60, each with half a count added per bin:
    # e = (50.5, 30.5, 20.5) / 101.5, a = (10.5, 30.5, 60.5) / 101.5.
    e = np.array([50.5, 30.5, 20.5]) / 101.5
    a = np.array([10.5, 30.5, 60.5]) / 101.5
    reference = float(((a - e) * np.log(a / e)).sum())
    assert reference == pytest.approx(0.6191 + 0.4264, abs=1e-3)  # the first and the last bin; the middle one is equal
    assert psi([50, 30, 20], [10, 30, 60]) == pytest.approx(reference, rel=1e-12)
    assert psi([50, 30, 20], [50, 30, 20]) == 0.0
    # An empty bin on one side is large but finite; the measure is symmetric.
    both_ways = psi([50, 50, 0], [0, 50, 50]), psi([0, 50, 50], [50, 50, 0])
    assert both_ways[0] == pytest.approx(both_ways[1]) and 0 < both_ways[0] < 10


def test_input_stats_are_the_grey_mean_and_std_of_the_model_input():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    grey = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    brightness, contrast = input_stats(rgb)
    assert brightness == pytest.approx(grey.mean(), abs=0.6) and contrast == pytest.approx(grey.std(), abs=0.6)
    one = rgb[..., :1]
    assert input_stats(one) == pytest.approx((one.mean(), one.std()), abs=1e-6)


def test_compute_baseline_shares_histogram_and_input_statistics():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.4, 0.3, 0.3], [1.0, 0.0, 0.0]])
    b = compute_baseline(probs, np.array([[100, 30], [110, 40], [120, 50], [130, 60]]), split="test", bins=4)
    assert b.classes == (0.75, 0.25, 0.0)
    assert b.score_edges == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert b.score_hist == (0.0, 0.25, 0.25, 0.5)  # 0.4, 0.7, 0.9 and 1.0 (in the last bin)
    assert b.low_share == 0.25 and b.threshold == 0.5 and b.images == 4
    assert b.brightness == Stat(115.0, pytest.approx(np.std([100, 110, 120, 130])))
    again = Baseline.from_dict(json.loads(json.dumps(b.to_dict())), 3)  # as model.json keeps it
    assert again.to_dict() == b.to_dict() and again.brightness.std == pytest.approx(b.brightness.std, abs=1e-4)


# ------------------------------------------------------------------------------- model.json

def test_convert_writes_a_baseline_from_the_verification_images(color_bundle):
    info = read_model_info(color_bundle)
    b = info.baseline
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    assert b.images == report["num_samples"] and b.split == report["verification_split"]
    predicted = np.bincount(report["predictions_quant"], minlength=info.num_classes) / b.images
    assert b.classes == pytest.approx(tuple(predicted), abs=1e-6)
    assert sum(b.score_hist) == pytest.approx(1.0, abs=1e-5) and len(b.score_edges) == len(b.score_hist) + 1
    # Noisy solid colours: mid-grey on average, with some contrast from the noise and the patch.
    assert 30 < b.brightness.mean < 200 and b.contrast.mean > 5 and b.brightness.std > 0
    load_bundle(color_bundle)  # the sha256 still matches: the baseline is written with the rest of model.json


@pytest.mark.parametrize("change, fragment", [
    ({"classes": [0.5, 0.3, 0.3]}, "baseline.classes sums to 1.1000, not 1"),
    ({"score_hist": "lots"}, "baseline.score_hist has 'lots'"),
    ({"score_edges": [0.0, 0.5, 0.4, 1.0]}, "baseline.score_edges must rise strictly from 0 to 1"),
    ({"brightness": {"mean": "dark", "std": 1}}, "baseline.brightness.mean is 'dark', not a number"),
    ({"contrast": {"mean": 40, "std": -1}}, "baseline.contrast.std is -1, outside 0-255"),
    ({"threshold": 2}, "baseline.threshold is 2, outside 0-1"),
    ({"images": 0}, "baseline.images is 0, not a positive whole number"),
])
def test_a_malformed_baseline_is_refused_in_one_line_naming_the_file(color_bundle, tmp_path, capsys, change, fragment):
    bundle = tmp_path / "bundle"
    shutil.copytree(color_bundle, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["baseline"] = {**BASELINE, **change}
    (bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError) as e:
        read_model_info(bundle)
    msg = str(e.value)
    assert msg.startswith(f"{bundle / 'model.json'}: {fragment}") and "\n" not in msg and "edgesight convert" in msg
    code, _, err = run_cli(["run", bundle, "--source", "synthetic:32x32", "--max-frames", "1"], capsys)
    assert code != 0 and fragment in err and len(err.strip().splitlines()) == 1


def test_a_baseline_without_a_share_per_label_is_refused_when_the_model_loads(color_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(color_bundle, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["baseline"] = {**BASELINE, "classes": [0.5, 0.5]}
    (bundle / "model.json").write_text(json.dumps(meta))
    fragment = f"{bundle / 'model.json'}: baseline.classes has 2 values, expected a list of 3 shares"
    with pytest.raises(BundleError, match=re.escape(fragment)):
        Classifier(bundle)
    code, _, err = run_cli(["run", bundle, "--source", "synthetic:32x32", "--max-frames", "1"], capsys)
    assert code != 0 and fragment in err and len(err.strip().splitlines()) == 1


def test_a_baseline_that_is_not_an_object_is_refused():
    with pytest.raises(BundleError, match=r"^m.json: baseline is list, not an object; run 'edgesight convert' again"):
        Baseline.from_dict([1, 2], 3, where="m.json")


# ------------------------------------------------------------------------------- the window

def _monitor(**kw) -> DriftMonitor:
    return DriftMonitor(Baseline.from_dict(BASELINE, 3), **kw)


def test_window_figures_match_a_reference_computed_from_the_frames():
    m = _monitor(window=40, threshold=100.0, shift=100.0)
    rng = np.random.default_rng(3)
    frames = []
    for i in range(100):
        p = rng.dirichlet([1, 1, 1])
        inputs = (float(rng.uniform(80, 160)), float(rng.uniform(20, 60)))
        m.add(p, inputs, i)
        frames.append((int(p.argmax()), float(p.max()), *inputs))
    last = np.array(frames[-40:])
    d = m.to_dict()
    tops = last[:, 0].astype(int)
    runs = 1 + int((tops[1:] != tops[:-1]).sum())
    assert d["frames"] == 40 and d["seen"] == 100 and d["label_runs"] == runs
    expected_classes = np.array(BASELINE["classes"]) * 100
    assert d["psi_classes"] == pytest.approx(psi(expected_classes, np.bincount(tops, minlength=3) / 40 * runs), abs=1e-4)
    bins = np.minimum((last[:, 1] * 4).astype(int), 3)
    assert d["psi_scores"] == pytest.approx(psi(np.array(BASELINE["score_hist"]) * 100, np.bincount(bins, minlength=4)), abs=1e-4)
    assert d["brightness"] == pytest.approx(last[:, 2].mean(), abs=0.01)
    assert d["brightness_shift"] == pytest.approx((last[:, 2].mean() - 120) / 20, abs=1e-3)
    assert d["contrast_shift"] == pytest.approx((last[:, 3].mean() - 40) / 8, abs=1e-3)
    assert d["low_share"] == pytest.approx((last[:, 1] < 0.5).mean())


def test_classes_enrolled_after_conversion_are_left_out():
    m = _monitor(window=30, threshold=100.0, shift=100.0)
    for i in range(30):  # a fourth, enrolled class scores highest: the trained ones are counted
        m.add(np.array([0.1, 0.25, 0.05, 0.6]), (120.0, 40.0), i)
    assert m._classes.tolist() == [0, 30, 0] and m.to_dict()["low_share"] == 1.0


def test_psis_wait_for_a_full_window_and_shifts_for_30_frames():
    m = _monitor(window=60)
    for i in range(29):
        m.add(np.array([0.9, 0.05, 0.05]), (120.0, 40.0), i)
    d = m.to_dict()
    assert d["brightness_shift"] is None and d["psi_scores"] is None and d["psi_classes"] is None and not d["alert"]
    m.add(np.array([0.9, 0.05, 0.05]), (120.0, 40.0), 29)
    assert m.to_dict()["brightness_shift"] == 0.0 and m.to_dict()["psi_scores"] is None
    with pytest.raises(ConfigError, match="--drift-window 10: too few frames"):
        RunConfig(drift_window=10)
    assert RunConfig(drift_window=0).drift_window == 0


def test_alert_is_raised_once_when_brightness_drops_and_cleared_once_after(caplog):
    m = _monitor(window=50, threshold=100.0)  # the PSIs out of the way: brightness alone
    p = np.array([0.8, 0.1, 0.1])
    events = []
    with caplog.at_level(logging.INFO, logger="edgesight.drift"):
        for i in range(300):
            dark = 100 <= i < 180
            events.append(m.add(p, (30.0 if dark else 120.0, 40.0), i))
    changes = [(i, e) for i, e in enumerate(events) if e]
    # 50-frame window: the mean crosses -2 sd (80 grey levels) after 23 dark frames and is back
    # under -1.6 sd (the alert clears at 80 % of the limit) after 33 bright ones.
    assert changes == [(122, "raised"), (212, "cleared")]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("input drift at frame 122: brightness -2.1 sd (79 vs 120 grey levels) (over the last 50 frames")
    assert lines[1].startswith("input drift cleared at frame 212 (raised at frame 122): ")
    assert m.alerts == 1 and not m.to_dict()["alert"] and m.to_dict()["since_frame"] is None


# --------------------------------------------------------------------- the loop and outputs

def _folder_with_a_dark_stretch(color_data, folder, bright=60, dark=60, after=80):
    """The colour dataset's own images, then darkened copies, then the originals again."""
    images = sorted(p for c in ("red", "green", "blue") for p in (color_data / c).iterdir())
    folder.mkdir()
    names = [(images[i % len(images)], 1.0) for i in range(bright)]
    names += [(images[i % len(images)], 0.2) for i in range(dark)]
    names += [(images[i % len(images)], 1.0) for i in range(after)]
    for i, (path, gain) in enumerate(names):
        image = cv2.imread(str(path))
        cv2.imwrite(str(folder / f"{i:04d}.png"), (image * gain).astype(np.uint8))
    return folder


def test_run_alerts_once_on_a_dark_stretch_and_reports_drift_in_the_statistics(color_bundle, color_data, tmp_path, capsys, caplog):
    folder = _folder_with_a_dark_stretch(color_data, tmp_path / "frames")
    with caplog.at_level(logging.INFO, logger="edgesight.drift"):
        code, _, err = run_cli(["run", color_bundle, "--source", folder, "--drift-window", "40", "--drift-threshold", "50",
                                "--stats-json", tmp_path / "s.json", "--status-file", tmp_path / "status.json", "--quiet"], capsys)
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if r.name == "edgesight.drift"]
    # darker copies: lower grey levels, and lower contrast with them
    assert len(lines) == 2 and lines[0].startswith("input drift at frame ") and re.search(r"(brightness|contrast) -\d", lines[0])
    raised = int(lines[0].split()[4].rstrip(":"))
    assert 60 < raised < 120 and lines[1].startswith("input drift cleared at frame ")
    for name in ("s.json", "status.json"):
        drift = json.loads((tmp_path / name).read_text())["drift"]
        assert drift["alerts"] == 1 and drift["alert"] is False and drift["window"] == 40 and drift["seen"] == 200
        assert abs(drift["brightness_shift"]) < 1.6 and drift["threshold"] == 50


def test_a_bundle_without_a_baseline_reports_drift_as_null_with_one_note(color_bundle, tmp_path, capsys, caplog):
    bundle = tmp_path / "old"
    shutil.copytree(color_bundle, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    del meta["baseline"]
    (bundle / "model.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="edgesight"):
        code, _, err = run_cli(["run", bundle, "--source", "synthetic:32x32", "--max-frames", "50", "--stats-interval", "0.01",
                                "--stats-json", tmp_path / "s.json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["drift"] is None
    notes = [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]
    assert len(notes) == 1 and "no baseline in model.json" in notes[0] and "convert the model again" in notes[0]


def test_an_anomaly_bundle_is_not_told_to_convert_again(caplog):
    from types import SimpleNamespace

    from edgesight.edge.loop.drift import drift_monitor

    info = SimpleNamespace(baseline=None, extra={"task": "anomaly"})
    with caplog.at_level(logging.INFO, logger="edgesight"):
        assert drift_monitor(info, RunConfig()) is None
    notes = [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]
    assert notes == ["drift is not measured: anomaly detection bundles have no drift baseline"]


def test_status_carries_the_drift_object():
    sink = HttpSink(port=0)
    try:
        m = _monitor(window=30, threshold=100.0)
        for i in range(40):
            m.add(np.array([0.8, 0.1, 0.1]), (20.0, 40.0), i)
        sink.update_stats({"frames": 40, "drift": m.to_dict(), "result": None})
        with urllib.request.urlopen(sink.url + "status", timeout=5) as r:
            status = json.loads(r.read())
        assert status["drift"]["alert"] is True and status["drift"]["since_frame"] == 29
        assert status["drift"]["reasons"][0].startswith("brightness -5.0 sd") and "drift" not in status["stats"]
        sink.update_stats({"frames": 41, "drift": None})
        with urllib.request.urlopen(sink.url + "status", timeout=5) as r:
            assert json.loads(r.read())["drift"] is None
    finally:
        sink.close()


@needs_broker
def test_mqtt_retains_the_drift_object_and_publishes_alerts(broker):
    events = Subscriber(broker.port, "cam/alert")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/cam", qos=1)
    try:
        assert sink.wait_connected(5)
        m = _monitor(window=30, threshold=100.0)
        p = np.array([0.8, 0.1, 0.1])
        for i in range(30):
            m.add(p, (120.0, 40.0), i)
        sink.update_stats({"frames": 30, "drift": m.to_dict()})
        for i in range(30, 60):
            if m.add(p, (20.0, 40.0), i):
                sink.update_stats({"frames": i + 1, "drift": m.to_dict()})
        sink.update_stats({"frames": 60, "drift": m.to_dict()})
        sink.update_stats({"frames": 61, "drift": None})  # a model without a baseline publishes nothing
        assert sink.flush(5)
    finally:
        sink.close()
    alerts = [json.loads(msg.payload) for msg in events.take(2, timeout=3)]
    events.close()
    assert [(a["kind"], a["alert"]) for a in alerts] == [("drift", True)]
    assert alerts[0]["drift"]["reasons"][0].startswith("brightness -")

    late = Subscriber(broker.port, "cam/drift")  # subscribes after the run: the retained state
    retained = late.take(1)
    late.close()
    assert retained and retained[0].retain
    drift = json.loads(retained[0].payload)
    assert drift["alert"] is True and drift["seen"] == 60 and drift["alerts"] == 1
