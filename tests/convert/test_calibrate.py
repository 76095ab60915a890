"""Calibrated scores: the temperature fit, ECE, and what a bundle carries and outputs."""

import json
import struct

import numpy as np
import pytest

from edgesight.convert.calibrate import (
    ECE_BINS,
    TEMPERATURE_BOUNDS,
    expected_calibration_error,
    fit_temperature,
    format_ece_line,
    nll,
    reliability_bins,
    softmax,
)
from edgesight.training.data import Split
from tests.conftest import run_cli


def _synthetic(temperature: float, n: int = 20000, k: int = 5, seed: int = 0):
    """Logits whose calibrated probabilities are known: labels are drawn from softmax(u), and
    the model reports u * temperature, so softmax(logits / temperature) is the truth."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 2.0, (n, k))
    y = (softmax(u).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return u * temperature, y


def _brute_force_temperature(logits, labels) -> float:
    """Reference: the plain negative log-likelihood on a fine log-spaced grid, written out."""
    grid = np.geomspace(*TEMPERATURE_BOUNDS, 1501)
    losses = []
    for t in grid:
        s = logits / t
        s = s - s.max(axis=1, keepdims=True)
        log_p = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        losses.append(-log_p[np.arange(len(labels)), labels].mean())
    return float(grid[int(np.argmin(losses))])


@pytest.mark.parametrize("true_t", [0.25, 1.0, 3.0])
def test_fit_recovers_a_known_temperature_like_the_brute_force_reference(true_t):
    logits, y = _synthetic(true_t)
    t = fit_temperature(logits, y)
    ref = _brute_force_temperature(logits, y)
    assert abs(t - true_t) / true_t < 0.02
    assert abs(t - ref) / ref < 0.006  # the grid's own step is 0.4 %
    plain = fit_temperature(logits, y, prior=False)
    assert abs(plain - ref) / ref < 0.003
    assert nll(logits, y, plain) <= min(nll(logits, y, ref), nll(logits, y, 1.0)) + 1e-12


def test_fit_is_deterministic_and_stays_finite_when_every_label_is_right():
    logits = np.array([[4.0, 0.0, -1.0], [0.0, 3.0, 0.5], [-1.0, 0.0, 2.0], [5.0, 1.0, 0.0]])
    y = np.array([0, 1, 2, 0])
    # The plain likelihood keeps improving as T -> 0 (every score -> 1.0): the search stops at its bound.
    assert fit_temperature(logits, y, prior=False) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)
    t = fit_temperature(logits, y)
    assert TEMPERATURE_BOUNDS[0] * 1.5 < t < TEMPERATURE_BOUNDS[1] / 1.5 and t == fit_temperature(logits, y)
    # With e = 1 / (N + 2) spread over the other classes the mean top score is near (N + 1) / (N + 2).
    assert abs(softmax(logits, t).max(axis=1).mean() - 5 / 6) < 0.05


def test_fit_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        fit_temperature(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="labels must be class indices in 0..2"):
        fit_temperature(np.zeros((2, 3)), [0, 3])


def test_ece_on_hand_made_inputs():
    # Two bins used: top score 0.9 (half right) and 0.6 (all right): |0.5 - 0.9| and |1 - 0.6|.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    y = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    # Calibrated by construction: 0.75 confidence, 3 of 4 right.
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # Weighted by bin size: 3 images at 1.0 all right, 1 image at 0.5 wrong -> 1/4 * 0.5.
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.125)


def test_reliability_bins_are_closed_on_the_right():
    edge = 1 / ECE_BINS
    probs = np.array([[edge, 1 - edge], [1 - edge, edge], [0.5, 0.5], [1.0, 0.0]])
    r = reliability_bins(probs, np.array([1, 0, 0, 0]))
    assert r["count"].sum() == 4 and len(r["count"]) == ECE_BINS
    assert r["count"][ECE_BINS - 1] == 1 and r["count"][ECE_BINS - 2] == 2 and r["count"][7] == 1
    assert np.isnan(r["accuracy"][0]) and r["accuracy"][7] == 1.0


def test_logit_layer_finds_the_dense_before_the_softmax():
    import keras

    from edgesight.convert.calibrate import logit_layer

    inp = keras.Input((4,))
    fused = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(inp))
    split = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(3, name="logits")(inp)))
    relu = keras.Model(inp, keras.layers.Dense(3, activation="relu")(inp))
    assert logit_layer(fused).name == "head" and logit_layer(split).name == "logits"
    assert logit_layer(relu) is None


def test_ece_line_of_the_table():
    report = {"ece": {"bins": 15, "before": {"float": 0.21}, "after": {"float": 0.012, "quant": 0.02}},
              "calibration": {"applied": True, "temperature": 0.4321}}
    (line,) = format_ece_line(report)
    assert line.startswith("ECE (15 bins)") and "0.0120" in line and "0.0200" in line and "uncalibrated 0.2100, T 0.432" in line


@pytest.mark.slow
def test_bundle_records_temperature_ece_and_reliability_diagram(color_bundle, trained_run):
    info = json.loads((color_bundle / "model.json").read_text())
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    cal = report["calibration"]
    assert cal["applied"] is True and cal["fitted_on"] == "val"
    assert cal["num_images"] == len(Split.load(trained_run / "split.json").val)
    assert TEMPERATURE_BOUNDS[0] < cal["temperature"] < TEMPERATURE_BOUNDS[1] and cal["temperature"] != 1.0
    assert cal["nll_before"] > 0 and cal["nll_after"] > 0
    assert info["calibration"] == {"method": "temperature", "temperature": cal["temperature"], "in_model": True,
                                   "fitted_on": "val", "num_images": cal["num_images"]}
    ece = report["ece"]
    assert ece["bins"] == 15 and set(ece["before"]) == {"float"} and set(ece["after"]) == {"float", "quant"}
    assert all(0.0 <= v <= 1.0 for v in (ece["before"]["float"], *ece["after"].values()))
    png = (color_bundle / "reliability.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 600  # two panels side by side


@pytest.mark.slow
def test_int8_scores_are_the_keras_logits_over_t(color_bundle, trained_run):
    import keras

    from edgesight.convert.calibrate import logit_layer, predict_logits
    from edgesight.edge.model.interpreter import TFLiteClassifier
    from edgesight.edge.model.spec import read_model_info
    from edgesight.training.pipeline import load_batch

    info = read_model_info(color_bundle)
    t = info.extra["calibration"]["temperature"]
    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    samples = Split.load(trained_run / "split.json").samples("all")
    logits = predict_logits(model, logit_layer(model), samples, info.preprocess, progress=False)
    scores = TFLiteClassifier(color_bundle / "model.tflite").predict_batch(load_batch([s.path for s in samples], info.preprocess))
    assert np.abs(scores - softmax(logits, t)).max() < 0.08  # one uint8 output step is 1/256; rounding compounds over layers
    # The temperature matters: without it the Keras scores differ by more than that tolerance.
    assert np.abs(softmax(logits) - softmax(logits, t)).max() > 0.08


@pytest.mark.slow
def test_no_calibrate_leaves_t_at_1(trained_run, tmp_path, capsys):
    import keras

    from edgesight.edge.model.interpreter import TFLiteClassifier
    from edgesight.edge.model.spec import read_model_info
    from edgesight.training.pipeline import load_batch

    out = tmp_path / "plain"
    code, text, err = run_cli(["convert", trained_run, "--quant", "float32", "--no-calibrate", "--out", out], capsys)
    assert code == 0, err
    report = json.loads((out / "conversion_report.json").read_text())
    info = read_model_info(out)
    assert info.extra["calibration"]["temperature"] == 1.0 and info.extra["calibration"]["in_model"] is False
    assert report["calibration"]["applied"] is False and "--no-calibrate" in report["calibration"]["note"]
    assert report["config"]["calibrate"] is False
    assert report["ece"]["before"]["float"] == report["ece"]["after"]["float"]
    assert "ECE (15 bins)" in text and "--no-calibrate" in text
    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    test = Split.load(trained_run / "split.json").test
    images = load_batch([s.path for s in test], info.preprocess)
    ours = TFLiteClassifier(out / "model.tflite").predict_batch(images)
    assert np.abs(ours - model.predict(images.astype(np.float32), verbose=0)).max() < 1e-5


@pytest.mark.slow
def test_bare_keras_fits_on_the_held_out_part_of_a_labelled_calib(trained_run, tmp_path, capsys):
    import shutil

    from tests.conftest import write_color_dataset

    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    data = write_color_dataset(tmp_path / "data", per_class=10, size=16, seed=5)
    code, text, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", data,
                               "--quant", "float32", "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    cal = json.loads((tmp_path / "b" / "conversion_report.json").read_text())["calibration"]
    assert cal["applied"] is True and cal["fitted_on"] == "calib-holdout" and cal["num_images"] == 6
    assert "fitted on the verification images" in cal["note"] and "ECE (15 bins)" in text
