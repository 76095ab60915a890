"""A tiny model bundle built without TensorFlow: a .tflite written with the LiteRT schema's
object API, whose scores and embedding are simple functions of the pixels.

The model takes a uint8 8x8 RGB image; its embedding is the mean colour of each 4x4 quadrant
(12 values, uint8 with scale 1); its scores are a softmax over blue, green and red of how much
each channel stands out (uint8, scale 1/256). The outputs are listed embedding first, scores
second, the opposite of what edgesight's converter writes, so a runtime that goes by position
gets them wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from edgesight.edge.model.enroll_files import REFERENCE_FILE, npy_bytes, reference_array

LABELS = ("blue", "green", "red")
COLORS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 30), "yellow": (30, 210, 220),
          "purple": (200, 40, 160)}
SIZE = 8
EMB = 12


def tiny_tflite(embedding: bool = True) -> bytes:
    """The model's bytes (see the module text); without ``embedding`` it has only the scores."""
    T = tfl.TensorType
    buffers = [tfl.BufferT()]

    def buffer(array: np.ndarray) -> int:
        buffers.append(tfl.BufferT(data=np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)))
        return len(buffers) - 1

    tensors = []

    def tensor(name: str, shape: Sequence[int], ttype: int, data=None, scale=None, zp=None) -> int:
        t = tfl.TensorT()
        t.name, t.shape, t.type = name, np.array(shape, np.int32), ttype
        t.buffer = buffer(data) if data is not None else 0
        if scale is not None:
            q = tfl.QuantizationParametersT()
            q.scale, q.zeroPoint = np.array([scale], np.float32), np.array([zp], np.int64)
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    # logit of class k: 0.02 * sum over quadrants of (its channel - half of each other channel)
    w = np.zeros((3, EMB), np.float32)
    for k, channel in enumerate((2, 1, 0)):  # blue, green, red in RGB order
        for q in range(4):
            for c in range(3):
                w[k, q * 3 + c] = 0.02 if c == channel else -0.01
    image = tensor("image", (1, SIZE, SIZE, 3), T.UINT8, scale=1.0, zp=0)
    pixels = tensor("pixels", (1, SIZE, SIZE, 3), T.FLOAT32)
    pooled = tensor("pooled", (1, 2, 2, 3), T.FLOAT32)
    shape = tensor("shape", (2,), T.INT32, data=np.array([1, EMB], np.int32))
    features = tensor("features", (1, EMB), T.FLOAT32)
    weights = tensor("weights", (3, EMB), T.FLOAT32, data=w)
    bias = tensor("bias", (3,), T.FLOAT32, data=np.zeros(3, np.float32))
    logits = tensor("logits", (1, 3), T.FLOAT32)
    probs = tensor("probs", (1, 3), T.FLOAT32)
    scores = tensor("scores_out", (1, 3), T.UINT8, scale=1 / 256, zp=0)
    emb = tensor("embedding_out", (1, EMB), T.UINT8, scale=1.0, zp=0) if embedding else None

    codes = []

    def code(builtin: int) -> int:
        c = tfl.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        codes.append(c)
        return len(codes) - 1

    B, O = tfl.BuiltinOperator, tfl.BuiltinOptions
    ops = []

    def op(builtin: int, inputs, outputs, opt_type=0, options=None) -> None:
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code(builtin), np.array(inputs, np.int32), np.array(outputs, np.int32)
        o.builtinOptionsType, o.builtinOptions = opt_type, options
        ops.append(o)

    pool = tfl.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = tfl.Padding.VALID, 4, 4, 4, 4
    softmax = tfl.SoftmaxOptionsT()
    softmax.beta = 1.0
    op(B.DEQUANTIZE, [image], [pixels])
    op(B.AVERAGE_POOL_2D, [pixels], [pooled], O.Pool2DOptions, pool)
    op(B.RESHAPE, [pooled, shape], [features])
    op(B.FULLY_CONNECTED, [features, weights, bias], [logits], O.FullyConnectedOptions, tfl.FullyConnectedOptionsT())
    op(B.SOFTMAX, [logits], [probs], O.SoftmaxOptions, softmax)
    op(B.QUANTIZE, [probs], [scores])
    if embedding:
        op(B.QUANTIZE, [features], [emb])
    graph = tfl.SubGraphT()
    graph.tensors, graph.operators, graph.name = tensors, ops, "main"
    graph.inputs = np.array([image], np.int32)
    graph.outputs = np.array([emb, scores] if embedding else [scores], np.int32)
    model = tfl.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [graph], buffers
    model.description = "tiny test model"
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def colour_image(name: str, rng: np.random.Generator, size: int = 24, noise: float = 20.0) -> np.ndarray:
    """A noisy BGR image of one of :data:`COLORS`."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = COLORS[name]
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, name: str, n: int, seed: int = 0) -> list:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{name}_{i:02d}.png"
        cv2.imwrite(str(p), colour_image(name, rng))
        paths.append(p)
    return paths


def write_tiny_bundle(out: Path, embedding: bool = True) -> Path:
    """A bundle of the tiny model as ``convert`` writes one (model.json describes both outputs
    and records the reference embeddings), with 10 reference images per class."""
    from edgesight.edge.model.interpreter import TFLiteClassifier
    from edgesight.edge.model.preprocess import frame_to_pixels
    from edgesight.edge.model.spec import PreprocessSpec

    out.mkdir(parents=True, exist_ok=True)
    data = tiny_tflite(embedding)
    (out / "model.tflite").write_bytes(data)
    spec = PreprocessSpec(height=SIZE, width=SIZE)
    info: Dict = {"format": "edgesight.model/1", "toolkit_version": "test", "backbone": "tiny", "labels": list(LABELS),
                  "num_classes": 3, "preprocess": spec.to_dict(), "output": "probabilities", "source": {},
                  "model_file": "model.tflite", "sha256": hashlib.sha256(data).hexdigest()}
    if embedding:
        described = {"scores": {"name": "scores_out"}, "embedding": {"name": "embedding_out"}}
        clf = TFLiteClassifier(data, outputs=described)
        rng = np.random.default_rng(1)
        rows, labels = [], []
        for k, name in enumerate(LABELS):
            for _ in range(10):
                clf.predict(frame_to_pixels(colour_image(name, rng), spec))
                rows.append(clf.output_embedding())
                labels.append(k)
        ref = npy_bytes(reference_array(np.stack(rows), np.array(labels)))
        (out / REFERENCE_FILE).write_bytes(ref)
        info["outputs"] = {"scores": {"position": 1, **clf.output_tensor.to_dict(), "size": 3},
                           "embedding": {"position": 0, **clf.embedding_tensor.to_dict(), "size": EMB, "layer": "pool",
                                         "normalise": "l2"}}
        info["enrolment"] = {"reference": REFERENCE_FILE, "reference_sha256": hashlib.sha256(ref).hexdigest(), "classes": []}
    (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "labels.txt").write_text("".join(f"{x}\n" for x in LABELS))
    return out


def snapshot(folder: Path) -> Dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hash)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}
