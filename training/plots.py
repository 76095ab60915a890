"""Training curves, confusion-matrix and robustness figures (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgesight.edge.fsutil import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return Path(path)


def plot_training_curves(history: Dict[str, List[float]], path: Path, fine_tune_start: Optional[int] = None) -> Path:
    """Loss and accuracy per epoch, train and validation, with the fine-tuning start marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], marker="o", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", ms=3, label="validation")
        if fine_tune_start:
            ax.axvline(fine_tune_start + 0.5, color="grey", ls="--", lw=1, label="fine-tuning starts")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    plt = _pyplot()
    cm = np.asarray(cm, dtype=np.int64)
    n = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows != 0)
    side = min(20.0, max(4.5, 0.55 * n + 2))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(cm) / cm.sum() if cm.sum() else 0.0
    ax.set_title(f"{title} (accuracy {acc * 100:.1f}%, {int(cm.sum())} images)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    return _save(fig, path)


def plot_robustness(report: Dict, path: Path, title: str = "") -> Path:
    """Accuracy vs corruption severity (0: clean), one panel per corruption and one for the mean;
    the float model solid, TFLite models dashed."""
    plt = _pyplot()
    models = report["models"]
    names = list(next(iter(models.values()))["accuracy"])
    panels = names + ["mean"]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    x = [0, *report["severities"]]
    low = min(min(m["worst_by_severity"] + [m["clean_accuracy"]]) for m in models.values()) * 100
    for ax, panel in zip(axes.ravel(), panels):
        for i, (key, m) in enumerate(models.items()):
            ys = m["mean_by_severity"] if panel == "mean" else m["accuracy"][panel]
            ax.plot(x, [m["clean_accuracy"] * 100] + [v * 100 for v in ys], marker="o", ms=3, color=f"C{i}",
                    ls="-" if key == "float" else "--", label=key)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(max(0.0, low - 5), 101)
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy %")
    for j in range(cols):
        axes[(len(panels) - 1 - j) // cols, j].set_xlabel("severity")  # the lowest panel in use
    axes[0, 0].legend(fontsize=8)
    summary = ", ".join(f"{k} mean {m['mean_corruption_accuracy'] * 100:.1f}% (clean {m['clean_accuracy'] * 100:.1f}%)" for k, m in models.items())
    fig.suptitle(f"{title + ': ' if title else ''}{summary}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_anomaly_roc(path: Path, scores: Sequence[float], kinds: Sequence[str], title: str = "") -> Path:
    """ROC curves of an anomaly detector (all defects, and each kind against the good images)
    with its operating point (score 1.0, the calibrated threshold)."""
    from edgesight.edge.model.anomaly_fit import auroc, rates_at, roc_curve

    plt = _pyplot()
    s = np.asarray(scores, np.float64)
    good = np.array([k in ("ok", "good") for k in kinds])
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    curves = [("all defects", ~good)]
    curves += [(k, np.array([x == k for x in kinds])) for k in sorted({k for k in kinds if k not in ("ok", "good")})]
    for name, mask in curves:
        sel = good | mask
        fpr, tpr, _ = roc_curve(s[sel], mask[sel])
        a = auroc(s[sel], mask[sel])
        ax.plot(fpr, tpr, lw=2.2 if name == "all defects" else 1.2, label=f"{name} (AUROC {a:.3f})" if a is not None else name)
    at = rates_at(s, ~good, 1.0)
    if at["false_reject_rate"] is not None and at["recall"] is not None:
        ax.plot([at["false_reject_rate"]], [at["recall"]], "ko", label="threshold (score 1.0)")
    ax.plot([0, 1], [0, 1], color="0.8", lw=1, ls="--")
    ax.set_xlabel("false-reject rate (good parts flagged)")
    ax.set_ylabel("share of defects caught")
    ax.set_title(title or "anomaly detection ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_anomaly_scores(path: Path, scores: Sequence[float], kinds: Sequence[str], title: str = "") -> Path:
    """Histogram of the anomaly scores of good images and of each defect kind, threshold at 1.0."""
    plt = _pyplot()
    s = np.asarray(scores, np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    top = max(2.0, float(np.quantile(s, 0.99)) * 1.1) if len(s) else 2.0
    bins = np.linspace(0.0, top, 50)
    for kind in ["good", *sorted({k for k in kinds if k not in ("ok", "good")})]:
        sel = np.array([(k in ("ok", "good")) if kind == "good" else k == kind for k in kinds])
        if sel.any():
            ax.hist(np.clip(s[sel], 0, top), bins=bins, alpha=0.55 if kind == "good" else 0.45, label=f"{kind} ({int(sel.sum())})")
    ax.axvline(1.0, color="k", lw=1.2, ls="--", label="threshold")
    ax.set_xlabel("anomaly score (1.0 = threshold)")
    ax.set_ylabel("images")
    ax.set_title(title or "anomaly scores")
    ax.legend(fontsize=8)
    return _save(fig, path)
