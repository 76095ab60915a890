"""Side-by-side verification of a converted model against the Keras model it came from."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.edge.model.spec import ModelInfo
from edgesight.training.data import Sample
from edgesight.training.pipeline import inference_batch, load_batch

CHUNK = 256


def verify_conversion(
    keras_model,
    tflite: bytes,
    info: ModelInfo,
    samples: Sequence[Sample],
    progress: bool = True,
    num_threads: Optional[int] = None,
    stream=None,
) -> Dict[str, Any]:
    """Top-1 accuracy of both models, agreement, probability differences, per-class change.

    Both models see the same uint8 images, decoded and resized by the runtime's own code; the
    TFLite model runs in the device runtime's interpreter wrapper, exactly as on the device.

    Returns:
        The verification part of ``conversion_report.json``.
    """
    y, kp, qp = predict_both(keras_model, tflite, info, samples, progress, num_threads, stream)
    return compare(y, kp, qp, info.labels)


def predict_both(
    keras_model,
    tflite: bytes,
    info: ModelInfo,
    samples: Sequence[Sample],
    progress: bool = True,
    num_threads: Optional[int] = None,
    stream=None,
    on_batch: Optional[Callable[[np.ndarray], None]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the probabilities of the Keras and the TFLite model for ``samples``.

    ``on_batch`` sees each batch of uint8 model inputs, in order (the drift baseline measures
    them without decoding the images again).

    Returns:
        ``(labels, keras_probs, tflite_probs)``: class indices (-1 for an unlabelled sample)
        and two ``N x K`` arrays.
    """
    from tqdm import tqdm

    index = {c: i for i, c in enumerate(info.labels)}
    y = np.array([index[s.label] if s.label else -1 for s in samples], dtype=np.int64)
    spec = info.preprocess
    clf = TFLiteClassifier(tflite, num_threads=num_threads or os.cpu_count(), output=info.output, input_mean=spec.input_mean[0], input_std=spec.input_std[0])
    kp = np.zeros((len(samples), info.num_classes), np.float32)
    qp = np.zeros_like(kp)
    with tqdm(total=len(samples), desc="verifying", unit="img", disable=None if progress else True, leave=False, file=stream) as bar:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start : start + CHUNK]
            images = load_batch([s.path for s in chunk], spec)
            if on_batch is not None:
                on_batch(images)
            kp[start : start + len(chunk)] = keras_model.predict(images.astype(np.float32), batch_size=inference_batch(spec.height, spec.width), verbose=0)
            qp[start : start + len(chunk)] = clf.predict_batch(images, progress=bar.update)
    return y, kp, qp


def _agreement(kp: np.ndarray, qp: np.ndarray) -> Dict[str, Any]:
    """The figures of how far the converted model's probabilities ``qp`` are from the Keras
    model's ``kp``, labels or not."""
    kpred, qpred = kp.argmax(1), qp.argmax(1)
    diff = np.abs(kp - qp)
    return {
        "agreement": float((kpred == qpred).mean()),
        "changed_pp": round(float((kpred != qpred).mean()) * 100, 4),
        "mean_abs_prob_diff": float(diff.mean()),
        "max_abs_prob_diff": float(diff.max()),
        "distinct_predictions_float": int(len(np.unique(kpred))),
        "distinct_predictions_quant": int(len(np.unique(qpred))),
        "predictions_quant": qpred.tolist(),
    }


def compare(y: np.ndarray, kp: np.ndarray, qp: np.ndarray, labels: Sequence[str]) -> Dict[str, Any]:
    """The verification figures from labels ``y`` and the two models' probabilities."""
    kpred, qpred = kp.argmax(1), qp.argmax(1)
    per_class = {}
    for i, c in enumerate(labels):
        m = y == i
        n = int(m.sum())
        fa = float((kpred[m] == i).mean()) if n else 0.0
        qa = float((qpred[m] == i).mean()) if n else 0.0
        per_class[c] = {"support": n, "float_accuracy": fa, "quant_accuracy": qa, "change_pp": round((qa - fa) * 100, 4)}
    float_acc = float((kpred == y).mean())
    quant_acc = float((qpred == y).mean())
    return {
        "labelled": True,
        "num_samples": int(len(y)),
        "float_accuracy": float_acc,
        "quant_accuracy": quant_acc,
        "accuracy_drop_pp": round((float_acc - quant_acc) * 100, 4),
        **_agreement(kp, qp),
        "per_class": per_class,
    }


def compare_unlabelled(kp: np.ndarray, qp: np.ndarray, labels: Sequence[str]) -> Dict[str, Any]:
    """The verification figures for images without labels: the converted model against the
    Keras model's own predictions.

    Accuracy cannot be measured, so ``float_accuracy``, ``quant_accuracy`` and
    ``accuracy_drop_pp`` are None; ``changed_pp``, the share of images whose label changed,
    bounds the drop (an image can only become wrong by changing its label). ``per_class`` is
    keyed by the Keras model's label: how many images it gave that label (``support``) and the
    share the converted model agreed on.
    """
    kpred, qpred = kp.argmax(1), qp.argmax(1)
    per_class = {}
    for i, c in enumerate(labels):
        m = kpred == i
        n = int(m.sum())
        per_class[c] = {"support": n, "agreement": float((qpred[m] == i).mean()) if n else None}
    return {
        "labelled": False,
        "num_samples": int(len(kpred)),
        "float_accuracy": None,
        "quant_accuracy": None,
        "accuracy_drop_pp": None,
        **_agreement(kp, qp),
        "per_class": per_class,
    }
