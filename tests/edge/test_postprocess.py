import numpy as np
import pytest

from edgesight.edge.model.postprocess import UNKNOWN, Decider, Smoother


def test_smoother_averages_over_window():
    s = Smoother(window=3)
    s.update(np.array([1.0, 0.0]))
    s.update(np.array([0.0, 1.0]))
    idx, avg = s.update(np.array([0.0, 1.0]))
    np.testing.assert_allclose(avg, [1 / 3, 2 / 3])
    assert idx == 1
    _, avg = s.update(np.array([0.0, 1.0]))  # the first frame has left the window
    np.testing.assert_allclose(avg, [0.0, 1.0])


def test_hysteresis_prevents_flicker():
    s = Smoother(window=1, hysteresis=0.2)
    seq = [[0.6, 0.4], [0.45, 0.55], [0.5, 0.5], [0.3, 0.7]]
    labels = [s.update(np.array(p))[0] for p in seq]
    assert labels == [0, 0, 0, 1]  # 0.55 vs 0.45 is inside the margin; 0.7 vs 0.3 is not


def test_flickering_input_is_stable_when_smoothed():
    rng = np.random.default_rng(0)
    frames = [np.array([0.55, 0.45]) if i % 2 else np.array([0.45, 0.55]) for i in range(40)]
    frames = [f + rng.normal(0, 0.01, 2) for f in frames]
    raw = Decider(["a", "b"], smooth=1)
    smooth = Decider(["a", "b"], smooth=5, hysteresis=0.1)
    raw_changes = sum(raw(f)[3] for f in frames)
    smooth_changes = sum(smooth(f)[3] for f in frames)
    assert raw_changes >= 30 and smooth_changes == 1  # only the first label counts as a change


def test_threshold_gives_unknown_and_top_k_is_raw():
    d = Decider(["cat", "dog", "fox"], threshold=0.6, k=2)
    label, score, top, changed = d(np.array([0.5, 0.3, 0.2]))
    assert label == UNKNOWN and score == pytest.approx(0.5) and changed
    assert top == [("cat", 0.5), ("dog", pytest.approx(0.3))]
    label, score, _, changed = d(np.array([0.1, 0.8, 0.1]))
    assert (label, changed) == ("dog", True)
    assert d(np.array([0.1, 0.85, 0.05]))[3] is False


def test_invalid_window():
    with pytest.raises(ValueError):
        Smoother(window=0)
