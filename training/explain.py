"""Grad-CAM of a trained Keras classifier, and the ``errors.png`` grid of a run folder.

Grad-CAM weighs each channel of the backbone's last feature map by the mean gradient of the
explained class's score (the logit before the softmax, which does not saturate the way a
probability near 1 does) and keeps the positive part of the weighted sum, scaled up to the
input size and to [0, 1]. The feature map is the last 4-D tensor of the classifier's own graph:
the backbone sub-model's output as the pooling layer receives it, whichever backbone it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgesight.edge.errors import BundleError
from edgesight.edge.fsutil import write_bytes
from edgesight.edge.model.spec import ModelInfo
from edgesight.edge.tools.explain import Explanation
from .data import Sample

ERRORS_FILE = "errors.png"
MAX_ERRORS = 25


def _keras():
    from .tf import import_keras

    return import_keras()


def _inputs(layer) -> List[Any]:
    try:
        x = layer.input
    except (AttributeError, ValueError):  # a layer called more than once has no single input
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def feature_map_tensor(model, where: str = "the model"):
    """The last 4-D tensor of ``model``'s top-level graph that is not its input: the backbone's
    last feature map as the head (pooling, flatten) receives it.

    Raises:
        BundleError: the model has no such tensor (no convolutional feature map to explain).
    """
    keras = _keras()
    model_inputs = {id(t) for t in model.inputs}
    found = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for t in _inputs(layer):
            if len(t.shape) == 4 and id(t) not in model_inputs:
                found = t
    if found is None:
        raise BundleError(f"{where}: no convolutional feature map feeds the classifier head, so Grad-CAM cannot explain it; "
                          "explain its converted bundle instead (occlusion maps)")
    return found


class GradCam:
    """Grad-CAM maps of a Keras image classifier (the model built by ``edgesight train``, or
    any single-input model whose head pools a 4-D feature map).

    Args:
        model: the Keras classifier (raw pixels in, probabilities out).
        where: how errors name the model.
    """

    def __init__(self, model, where: str = "the model") -> None:
        keras = _keras()
        fmap = feature_map_tensor(model, where)
        self.feature_shape = tuple(int(d) for d in fmap.shape[1:])
        last = model.layers[-1]
        softmax = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
        # The class score is the logit: a softmax Dense head is re-applied without its softmax,
        # a separate softmax layer is skipped; any other head is explained on its output.
        self._dense = last if isinstance(last, keras.layers.Dense) and softmax else None
        self._logits = isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation) and softmax)
        head = last.input if self._dense is not None or self._logits else model.outputs[0]
        self._model = keras.Model(model.inputs, [fmap, head])

    def __call__(self, pixels: np.ndarray, targets: Optional[Sequence[Optional[int]]] = None) -> List[Explanation]:
        """Explain a batch of model inputs (``NxHxWxC``, 0-255).

        Args:
            targets: a class index per image, or None for its predicted class.
        """
        from .tf import import_tensorflow

        tf = import_tensorflow()
        x = tf.convert_to_tensor(np.asarray(pixels, np.float32))
        with tf.GradientTape() as tape:
            # Watching the input records every op after it, even in a frozen (non-trainable) backbone.
            tape.watch(x)
            fmap, head = self._model([x], training=False)
            if self._dense is not None:
                logits = tf.matmul(head, self._dense.kernel)
                logits = logits if self._dense.bias is None else logits + self._dense.bias
            else:
                logits = head
            probs = tf.nn.softmax(logits, axis=-1) if self._dense is not None or self._logits else logits
            p = probs.numpy()
            predicted = p.argmax(axis=1)
            chosen = [int(predicted[i]) if targets is None or targets[i] is None else int(targets[i]) for i in range(len(p))]
            score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(score, fmap).numpy()
        maps = np.maximum(np.einsum("nhwk,nk->nhw", fmap.numpy(), grads.mean(axis=(1, 2))), 0.0)
        h, w = x.shape[1], x.shape[2]
        return [Explanation(_to_input_size(m, h, w), chosen[i], int(predicted[i]), p[i]) for i, m in enumerate(maps)]


def _to_input_size(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    heat = cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat, 0.0, None)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).astype(np.float32)


class GradCamExplainer:
    """Grad-CAM for :func:`~edgesight.edge.tools.explain.explain_files`: a run folder or ``.keras`` file.

    Raises:
        BundleError: the model cannot be loaded or has no feature map to explain.
    """

    method = "grad-cam"

    def __init__(self, source: Path, labels: Optional[Path] = None, trust: bool = False) -> None:
        from .evaluate import load_model_source

        model, info, _ = load_model_source(Path(source), labels, trust)
        self.labels = tuple(info.labels)
        self.spec = info.preprocess
        self.model_name = str(source)
        self._cam = GradCam(model, str(source))
        self.params: Dict[str, Any] = {"feature_map": list(self._cam.feature_shape)}

    def explain(self, pixels: np.ndarray, target: Optional[int] = None) -> Explanation:
        return self._cam(np.asarray(pixels)[None], [target])[0]


def error_tile(pixels: np.ndarray, heatmap: np.ndarray, true: str, predicted: str, score: float) -> np.ndarray:
    """One misclassified image: its heatmap overlay, captioned with the true and predicted labels."""
    from edgesight.edge.tools.heatmap import explanation_panel

    return explanation_panel(pixels, heatmap, [f"true: {true}", f"pred: {predicted} {score:.2f}"], side=112)


def write_errors_grid(model, info: ModelInfo, samples: Sequence[Sample], path: Path, *, probs: Optional[np.ndarray] = None,
                      limit: int = MAX_ERRORS, batch_size: int = 32) -> Dict[str, Any]:
    """Write a grid of the misclassified ``samples`` (the most confident mistakes first, at most
    ``limit``) with Grad-CAM maps of what the model saw in the class it chose.

    Args:
        model: the Keras classifier.
        info: its labels and preprocessing.
        samples: labelled images (a run's test split).
        path: the PNG to write; nothing is written when every sample is right.
        probs: the model's probabilities for ``samples``, when already computed.

    Returns:
        ``{"file": name or None, "misclassified": n, "shown": k}`` (for ``metrics.json``).
    """
    from edgesight.edge.tools.heatmap import caption, encode_png, grid
    from .evaluate import predict_probs
    from .pipeline import load_batch

    if probs is None:
        probs = predict_probs(model, [s.path for s in samples], info.preprocess, batch_size)
    index = {c: i for i, c in enumerate(info.labels)}
    pred = np.asarray(probs).argmax(axis=1)
    wrong = [i for i, s in enumerate(samples) if index.get(s.label) != pred[i]]
    if not wrong:
        return {"file": None, "misclassified": 0, "shown": 0}
    shown = sorted(wrong, key=lambda i: -float(probs[i][pred[i]]))[: max(1, limit)]
    cam = GradCam(model)
    tiles = []
    for start in range(0, len(shown), batch_size):
        part = shown[start : start + batch_size]
        pixels = load_batch([samples[i].path for i in part], info.preprocess)
        for i, px, ex in zip(part, pixels, cam(pixels, [int(pred[i]) for i in part])):
            tiles.append(error_tile(px, ex.heatmap, samples[i].label, info.labels[pred[i]], float(probs[i][pred[i]])))
    note = f"{len(wrong)} misclassified, {len(shown)} shown, most confident first; heatmap: Grad-CAM of the predicted class"
    write_bytes(path, encode_png(caption(grid(tiles, cols=5), [note])))
    return {"file": Path(path).name, "misclassified": len(wrong), "shown": len(shown)}


def errors_summary(errors: Dict[str, Any], split: str = "test") -> str:
    """One line for the end of training."""
    if not errors.get("misclassified"):
        return f"no misclassified {split} images: no {ERRORS_FILE}"
    n, k, name = errors["misclassified"], errors["shown"], errors["file"]
    return f"{name}: {k} of {n} misclassified {split} images with Grad-CAM maps" if k < n else f"{name}: the {n} misclassified {split} image(s) with Grad-CAM maps"
