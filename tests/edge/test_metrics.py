import numpy as np
import pytest

from edgesight.training.metrics import classification_report, confusion_matrix, format_report


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_report_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    p[p == 3] = 2  # class 3 never predicted: precision 0 by convention
    r = classification_report(y, p, ["a", "b", "c", "d"])
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        assert r[f"precision_{avg}"] == pytest.approx(sk.precision_score(y, p, average=avg, zero_division=0))
        assert r[f"recall_{avg}"] == pytest.approx(sk.recall_score(y, p, average=avg, zero_division=0))
        assert r[f"f1_{avg}"] == pytest.approx(sk.f1_score(y, p, average=avg, zero_division=0))
    per = sk.precision_recall_fscore_support(y, p, zero_division=0)
    for i, lab in enumerate("abcd"):
        assert r["per_class"][lab]["precision"] == pytest.approx(per[0][i])
        assert r["per_class"][lab]["support"] == per[3][i]
    assert r["confusion_matrix"] == sk.confusion_matrix(y, p).tolist()


def test_format_report_lists_every_class():
    r = classification_report([0, 1, 1], [0, 1, 0], ["cat", "dog"])
    text = format_report(r)
    assert "cat" in text and "dog" in text and "accuracy: 66.67% (3 images)" in text
