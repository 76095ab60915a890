"""The linear probe: logistic regression on frozen features, the baseline a run must beat."""

import json

import numpy as np

from edgesight.training.probe import fit_probe, softmax_regression, verdict


def _blobs(n, d, classes, sep, seed, centre_seed=0):
    centres = np.random.default_rng(centre_seed).normal(0, 1, (classes, d)) * sep
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0, 1, (n, d)), y


def test_separable_features_are_learned_and_noise_is_not():
    x, y = _blobs(300, 20, 3, sep=3.0, seed=0)
    xv, yv = _blobs(150, 20, 3, sep=3.0, seed=1)  # the same classes, other samples
    probe = fit_probe((x, y), (xv, yv), 3)
    assert (probe["predict"](xv) == yv).mean() > 0.95 and probe["val_accuracy"] > 0.95
    rng = np.random.default_rng(2)
    noise = fit_probe((rng.normal(0, 1, (300, 20)), rng.integers(0, 3, 300)), (rng.normal(0, 1, (300, 20)), rng.integers(0, 3, 300)), 3)
    assert noise["val_accuracy"] < 0.5


def test_softmax_regression_matches_the_gradient_optimum():
    # At the optimum of the L2-regularised loss the gradient vanishes.
    x, y = _blobs(200, 5, 3, sep=1.0, seed=3)
    x = (x - x.mean(0)) / x.std(0)
    w, b = softmax_regression(x, y, 3, l2=0.1, steps=2000, lr=0.05)
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - np.eye(3)[y]) / len(y)
    assert np.abs(x.T @ g + 0.1 * w).max() < 1e-3 and np.abs(g.sum(0)).max() < 1e-3


def test_without_validation_data_the_default_strength_is_used():
    x, y = _blobs(60, 4, 2, sep=3.0, seed=4)
    probe = fit_probe((x, y), None, 2)
    assert probe["l2"] == 1e-3 and probe["val_accuracy"] is None


def test_verdict_warns_when_the_model_does_not_beat_its_probe():
    probe = {"accuracy": 0.9, "split": "test"}
    assert "warning" not in verdict(0.95, probe) and "(+5.0 pp)" in verdict(0.95, probe)
    line = verdict(0.85, probe)
    assert "(-5.0 pp)" in line and "not better than a linear probe" in line
    # Both perfect: nothing to improve, nothing to warn about.
    assert "warning" not in verdict(1.0, {"accuracy": 1.0, "split": "test"})


def test_scratch_runs_have_no_probe(trained_run):
    # cnn_small starts from random weights: there are no frozen pretrained features to probe
    assert "linear_probe" not in json.loads((trained_run / "metrics.json").read_text())
