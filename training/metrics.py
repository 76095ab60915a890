"""Classification metrics in plain NumPy (shared by training, conversion and the runtime)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted as ``j``."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> Dict[str, Any]:
    """Accuracy, macro/weighted precision, recall and F1, per-class figures, confusion matrix.

    Precision of a class never predicted, and recall of a class absent from ``y_true``, are 0
    (the convention scikit-learn uses with ``zero_division=0``).
    """
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = float(cm.sum())
    weights = support / total if total else np.zeros(n)
    return {
        "num_samples": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": {
            str(lab): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "labels": [str(x) for x in labels],
        "confusion_matrix": cm.tolist(),
    }


def format_report(report: Dict[str, Any]) -> str:
    """A per-class table followed by the overall figures, for the terminal."""
    labels = report["labels"]
    width = max([len("weighted avg")] + [len(x) for x in labels])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for lab in labels:
        c = report["per_class"][lab]
        lines.append(f"{lab:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    lines.append("")
    lines.append(f"{'macro avg':<{width}}  {report['precision_macro']:9.4f}  {report['recall_macro']:6.4f}  {report['f1_macro']:.4f}  {report['num_samples']:7d}")
    lines.append(f"{'weighted avg':<{width}}  {report['precision_weighted']:9.4f}  {report['recall_weighted']:6.4f}  {report['f1_weighted']:.4f}  {report['num_samples']:7d}")
    lines.append(f"accuracy: {report['accuracy'] * 100:.2f}% ({report['num_samples']} images)")
    return "\n".join(lines)
