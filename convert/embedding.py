"""The embedding output of a converted model (``edgesight convert --embedding``, the default).

The .tflite gets a second 8-bit output, computed in the same invoke as the class scores: the
pooled feature vector before the classifier head (the ``pool`` layer of
:func:`edgesight.training.backbones.build_classifier`; for other models, the input of the Dense
layer that feeds the softmax). The converter may list the two outputs in either order, so they
are identified by the Keras output order the signature records (``output_0`` the scores,
``output_1`` the embedding; by shape when there is no signature) and the model's output list is
rewritten as scores first, embedding second: MediaPipe's ImageClassifier reads its first output
as the classification head and the labels from its metadata, as before. model.json's ``outputs``
names both tensors (the runtime finds them by name, not position), and ``convert`` stores a few
embeddings per trained class for enrolment (see :mod:`edgesight.edge.model.enroll`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .quantize import ConversionError
from edgesight.edge.model.enroll import REFERENCE_PER_CLASS, normalise
from edgesight.edge.model.enroll_files import REFERENCE_FILE, npy_bytes, reference_array
from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.edge.model.spec import ModelInfo
from edgesight.training.data import Sample
from edgesight.training.pipeline import inference_batch, load_batch

CHUNK = 256


def feature_layer(model) -> Any:
    """The Keras tensor of the pooled features: the ``pool`` layer's output, else the input of
    the Dense layer that feeds the softmax.

    Raises:
        ConversionError: neither exists (the message says to pass ``--no-embedding``).
    """
    from .calibrate import logit_layer

    try:
        return model.get_layer("pool").output
    except ValueError:
        pass
    dense = logit_layer(model)
    if dense is not None:
        return dense.input
    raise ConversionError(f"{model.name}: no pooled feature layer ('pool', or a Dense layer feeding the softmax) to expose "
                          "as the embedding; convert with --no-embedding")


def embedding_model(model):
    """``model`` with a second output, the pooled features (weights shared, not copied)."""
    from edgesight.training.tf import import_keras

    keras = import_keras()
    features = feature_layer(model)
    return keras.Model(model.inputs, [model.outputs[0], features], name=model.name)


def order_outputs(tflite: bytes, num_classes: int) -> bytes:
    """Rewrite a two-output model's output list as ``[scores, embedding]``.

    Raises:
        ConversionError: the model does not have two outputs or they cannot be told apart.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    tree = tfl.ModelT.InitFromPackedBuf(tflite, 0)
    graph = tree.subgraphs[0]
    outputs = [int(i) for i in graph.outputs]
    if len(outputs) != 2:
        raise ConversionError(f"the converted model has {len(outputs)} outputs, expected 2 (scores and embedding); convert with --no-embedding")
    order: Optional[List[int]] = None
    for sig in tree.signatureDefs or []:
        named = {(o.name.decode() if isinstance(o.name, bytes) else str(o.name)): int(o.tensorIndex) for o in sig.outputs or []}
        if {"output_0", "output_1"} <= set(named) and set(outputs) == {named["output_0"], named["output_1"]}:
            order = [named["output_0"], named["output_1"]]
    if order is None:
        scores = [i for i in outputs if int(graph.tensors[i].shape[-1]) == num_classes]
        if len(scores) != 1:
            raise ConversionError("cannot tell the scores output from the embedding output of the converted model; convert with --no-embedding")
        order = [scores[0], next(i for i in outputs if i != scores[0])]
    if int(graph.tensors[order[0]].shape[-1]) != num_classes:
        raise ConversionError(f"the converted model's first Keras output has {graph.tensors[order[0]].shape[-1]} values, "
                              f"not the {num_classes} class scores; convert with --no-embedding")
    if outputs == order:
        return tflite
    graph.outputs = np.array(order, np.int32)
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def describe_outputs(clf: TFLiteClassifier, layer: str = "pool") -> Dict[str, Any]:
    """model.json's ``outputs``: each role's position, tensor name, shape and quantisation."""
    names = [d["name"] for d in clf._interp.get_output_details()]
    scores, emb = clf.output_tensor, clf.embedding_tensor
    out: Dict[str, Any] = {"scores": {"position": names.index(scores.name), **scores.to_dict(), "size": clf.num_classes}}
    if emb is not None:
        out["embedding"] = {"position": names.index(emb.name), **emb.to_dict(), "size": int(emb.shape[-1]), "layer": layer,
                            "normalise": "l2"}
    return out


def _int8_embeddings(clf: TFLiteClassifier, images: np.ndarray) -> np.ndarray:
    rows = []
    for img in images:
        clf.set_pixels(img)
        clf.invoke()
        rows.append(clf.output_embedding())
    return np.stack(rows) if rows else np.zeros((0, clf.embedding_tensor.shape[-1]), np.float32)


def embedding_agreement(two_model, clf: TFLiteClassifier, info: ModelInfo, samples: Sequence[Sample]) -> Dict[str, Any]:
    """Cosine similarity of the Keras (float) and converted embeddings on ``samples``."""
    cos: List[np.ndarray] = []
    for start in range(0, len(samples), CHUNK):
        images = load_batch([s.path for s in samples[start : start + CHUNK]], info.preprocess)
        float_emb = np.asarray(two_model.predict(images.astype(np.float32), batch_size=inference_batch(images.shape[1], images.shape[2]), verbose=0)[1], np.float32)
        cos.append(np.sum(normalise(float_emb) * normalise(_int8_embeddings(clf, images)), axis=1))
    c = np.concatenate(cos) if cos else np.zeros(0, np.float32)
    return {"num_samples": int(c.size), "size": int(clf.embedding_tensor.shape[-1]),
            "cosine_mean": round(float(c.mean()), 6) if c.size else None, "cosine_min": round(float(c.min()), 6) if c.size else None}


def reference_samples(eval_samples: Sequence[Sample], calib_samples: Sequence[Sample], labels: Sequence[str],
                      per_class: int = REFERENCE_PER_CLASS, seed: int = 0) -> List[Sample]:
    """Up to ``per_class`` labelled images per class for the reference embeddings: verification
    images first (unseen in training, as the device's will be), then calibration images."""
    rng = np.random.default_rng(seed)
    known = set(labels)
    picked: List[Sample] = []
    for c in labels:
        pool: List[Sample] = []
        for group in (eval_samples, calib_samples):
            items = sorted((s for s in group if s.label == c and s.label in known), key=lambda s: s.path)
            pool += [items[i] for i in rng.permutation(len(items))]
        seen: set = set()
        for s in pool:
            if s.path not in seen and len(seen) < per_class:
                seen.add(s.path)
                picked.append(s)
    return picked


def reference_file(clf: TFLiteClassifier, info: ModelInfo, eval_samples: Sequence[Sample], calib_samples: Sequence[Sample],
                   seed: int = 0) -> bytes:
    """``reference_embeddings.npy``: int8 embeddings of a few images per trained class.

    Unlabelled images (a plain calibration folder) are labelled by the converted model itself,
    keeping those it scores at 0.5 or more.
    """
    samples = reference_samples(eval_samples, calib_samples, info.labels, seed=seed)
    index = {c: i for i, c in enumerate(info.labels)}
    labels = [index[s.label] for s in samples]
    if not samples:
        unlabelled = list(eval_samples) + list(calib_samples)
        images = load_batch([s.path for s in unlabelled[:CHUNK * 4]], info.preprocess)
        emb, labels = [], []
        for img in images:
            p = clf.predict(img)
            if float(p.max()) >= 0.5 and labels.count(int(p.argmax())) < REFERENCE_PER_CLASS:
                emb.append(clf.output_embedding())
                labels.append(int(p.argmax()))
        if len(set(labels)) < 2:
            raise ConversionError("no images the model classifies confidently to keep as reference embeddings for enrolment; "
                                  "give labelled images with --eval DATA, or convert with --no-embedding")
        return npy_bytes(reference_array(np.stack(emb), np.array(labels)))
    emb = np.concatenate([_int8_embeddings(clf, load_batch([s.path for s in samples[i : i + CHUNK]], info.preprocess))
                          for i in range(0, len(samples), CHUNK)])
    return npy_bytes(reference_array(emb, np.array(labels)))


def enrolment_info(reference: bytes) -> Dict[str, Any]:
    """model.json's ``enrolment`` for a new bundle: the reference file, no enrolled classes."""
    return {"reference": REFERENCE_FILE, "reference_sha256": hashlib.sha256(reference).hexdigest(), "classes": []}
