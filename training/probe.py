"""The linear probe: logistic regression on a pretrained backbone's frozen, pooled features.

It is the baseline every transfer-learning run must beat: if training the network end to end
does not classify better than a linear classifier on features the backbone already had, the
training recipe is wasting the pretrained weights (too short, a learning rate that is too
high or too low, augmentation that does not fit the data). Every run with pretrained weights
fits one and reports it beside the model in ``metrics.json``.

The regression itself is plain NumPy (multinomial, L2, Adam on standardised features), its
strength chosen on the validation split, so it needs nothing beyond the ``train`` extra.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.model.spec import PreprocessSpec

from .data import Sample, Split

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
CHUNK = 64


def softmax_regression(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, steps: int = 300,
                       lr: float = 0.05, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch Adam.

    Args:
        x: ``N x D`` standardised features; y: ``N`` class indices.
        l2: weight decay on the weights (not the bias).

    Returns:
        ``(W, b)``: ``D x C`` weights and ``C`` biases.
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    w = rng.normal(0, 0.01, (d, num_classes))
    b = np.zeros(num_classes)
    onehot = np.eye(num_classes)[y]
    m_w, v_w, m_b, v_b = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        p = _softmax(x @ w + b)
        g = (p - onehot) / n
        gw = x.T @ g + l2 * w
        gb = g.sum(0)
        m_w = beta1 * m_w + (1 - beta1) * gw
        v_w = beta2 * v_w + (1 - beta2) * gw * gw
        m_b = beta1 * m_b + (1 - beta1) * gb
        v_b = beta2 * v_b + (1 - beta2) * gb * gb
        corr1, corr2 = 1 - beta1 ** t, 1 - beta2 ** t
        w -= lr * (m_w / corr1) / (np.sqrt(v_w / corr2) + eps)
        b -= lr * (m_b / corr1) / (np.sqrt(v_b / corr2) + eps)
    return w, b


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_probe(train: Tuple[np.ndarray, np.ndarray], val: Optional[Tuple[np.ndarray, np.ndarray]],
              num_classes: int, seed: int = 0) -> Dict[str, Any]:
    """Fit the probe on ``train`` features, picking the L2 strength with the best ``val``
    accuracy (ties: the stronger regularisation); without validation data, 1e-3.

    Returns:
        ``predict`` (features -> class indices), ``l2`` and ``val_accuracy`` (None without val).
    """
    xt, yt = train
    mean, std = xt.mean(0), xt.std(0) + 1e-6

    def fit(l2: float):
        return softmax_regression((xt - mean) / std, yt, num_classes, l2, seed=seed)

    best: Tuple[float, float, Any] = (-1.0, 0.0, None)
    grid = L2_GRID if val is not None and len(val[1]) else (1e-3,)
    for l2 in grid:
        w, b = fit(l2)
        acc = float(((((val[0] - mean) / std) @ w + b).argmax(1) == val[1]).mean()) if len(grid) > 1 else -1.0
        if acc >= best[0]:
            best = (acc, l2, (w, b))
    acc, l2, (w, b) = best

    def predict(x: np.ndarray) -> np.ndarray:
        return (((x - mean) / std) @ w + b).argmax(1)

    return {"predict": predict, "l2": l2, "val_accuracy": acc if acc >= 0 else None}


def pooled_features(feature_model: Any, samples: Sequence[Sample], spec: PreprocessSpec) -> np.ndarray:
    """The pooled backbone features of ``samples``, decoded as for training (no augmentation)."""
    from .pipeline import inference_batch, load_batch

    out: List[np.ndarray] = []
    for start in range(0, len(samples), CHUNK):
        batch = load_batch([s.path for s in samples[start:start + CHUNK]], spec).astype(np.float32)
        out.append(np.asarray(feature_model.predict(batch, verbose=0, batch_size=inference_batch(spec.height, spec.width, CHUNK))))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def linear_probe(backbone: Any, spec: PreprocessSpec, weights: str, alpha: float, split: Split,
                 eval_split: str, seed: int = 0, cached: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
    """Fit and score the linear probe of a run.

    The features come from the same backbone, weights and input size as the run, before any
    training: pixels -> normalise -> frozen backbone -> global average pooling.

    ``cached`` may hold the features of some splits already (``train``, ``val``: phase 1 of
    the run computed them with the same frozen backbone); the others are computed here.

    Returns:
        What ``metrics.json`` records under ``linear_probe``: ``accuracy`` on ``eval_split``,
        ``val_accuracy``, ``l2``, ``features``, ``train_images`` and ``seconds``.
    """
    from .backbones import build_classifier
    from .tf import import_keras

    keras = import_keras()
    t0 = time.time()
    index = {c: i for i, c in enumerate(split.classes)}
    model, _ = build_classifier(backbone, (spec.height, spec.width, spec.channels), len(split.classes), weights, alpha, dropout=0.0)
    features = keras.Model(model.input, model.get_layer("pool").output)

    cached = cached or {}

    def xy(name: str) -> Tuple[np.ndarray, np.ndarray]:
        samples = split.samples(name)
        x = cached[name].astype(np.float32) if name in cached else pooled_features(features, samples, spec)
        return x, np.array([index[s.label] for s in samples], np.int64)

    train = xy("train")
    val = xy("val") if split.val else None
    probe = fit_probe(train, val, len(split.classes), seed=seed)
    x_eval, y_eval = xy(eval_split)
    accuracy = float((probe["predict"](x_eval) == y_eval).mean()) if len(y_eval) else 0.0
    return {
        "accuracy": accuracy,
        "val_accuracy": probe["val_accuracy"],
        "split": eval_split,
        "l2": probe["l2"],
        "features": int(train[0].shape[1]),
        "train_images": int(len(train[1])),
        "seconds": round(time.time() - t0, 2),
    }


def verdict(model_accuracy: float, probe: Dict[str, Any]) -> str:
    """The line printed at the end of a run that compares the model with its probe."""
    gap = (model_accuracy - probe["accuracy"]) * 100
    line = (f"linear probe on the frozen backbone: {probe['accuracy']:.2%} on the {probe['split']} split; "
            f"the model {model_accuracy:.2%} ({gap:+.1f} pp)")
    if gap <= 0 and model_accuracy < 1.0:
        line += ("\nwarning: the trained model is not better than a linear probe on the backbone's frozen features; "
                 "train longer (--epochs, --fine-tune-epochs), lower --lr, or try --augment light")
    return line
