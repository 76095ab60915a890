"""Occlusion sensitivity: which part of an image a bundle's decision rests on, measured with the
LiteRT interpreter (no TensorFlow, so it runs on the device itself).

A grey square slides over the image; each position's drop in the probability of the explained
class (by default the predicted one) is spread over the pixels it covered, and the mean drop per
pixel, negatives clipped and scaled to [0, 1], is the heatmap. The occluded copies go through
the interpreter many at a time: an interpreter of its own has its input resized to a batch,
checked once against the bundle's own single-image results (a model that cannot take a batch,
or one running on an Edge TPU, is fed one image at a time instead).

:func:`explain_files` writes one picture per image (the image, its heatmap overlay, the label
and score) and an ``index.json``; ``edgesight explain`` uses it for bundles here and for
Grad-CAM of Keras models in :mod:`edgesight.training.explain`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ..errors import ConfigError
from ..fsutil import write_bytes, write_json
from ..model.interpreter import TFLiteClassifier
from ..model.preprocess import ImageReadError, load_for_model
from ..model.quant import dequantize, input_feeder, softmax
from ..model.spec import ModelInfo
from ..native_log import native_output
from .heatmap import encode_png, explanation_panel

log = logging.getLogger("edgesight")

# Grey in every channel: what a patch covers carries no colour or edge of its own.
FILL = 128
BATCH = 16

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Explanation:
    """A heatmap and the prediction it explains.

    Attributes:
        heatmap: float32 ``HxW`` at the model's input size, 0 to 1 (1: what the decision
            rests on most).
        target: index of the explained class.
        predicted: index of the predicted class.
        probs: the model's probabilities for the whole image.
        max_drop: occlusion only: the largest mean drop of the target's probability (0: no
            patch lowered it, and the map is all 0).
    """

    heatmap: np.ndarray
    target: int
    predicted: int
    probs: np.ndarray
    max_drop: Optional[float] = None

    @property
    def score(self) -> float:
        """The probability of the explained class."""
        return float(self.probs[self.target])


def default_patch(height: int, width: int) -> Tuple[int, int]:
    """About a fifth of the shorter side, moved by half a patch: 45/22 pixels at 224x224 (100
    positions), 3/1 at 16x16."""
    patch = max(1, round(min(height, width) / 5))
    return patch, max(1, patch // 2)


def check_patch(patch: Optional[int], stride: Optional[int], height: int, width: int) -> Tuple[int, int]:
    """``(patch, stride)`` with the defaults filled in.

    Raises:
        ConfigError: a patch larger than the input, or a stride larger than the patch (some
            pixels would never be covered).
    """
    p0, _ = default_patch(height, width)
    p = p0 if patch is None else patch
    side = min(height, width)
    if not isinstance(p, int) or not 1 <= p <= side:
        raise ConfigError(f"--patch {p}: must be 1 to {side}, the model's input is {height}x{width}; leave it out for {p0}")
    s = max(1, p // 2) if stride is None else stride
    if not isinstance(s, int) or not 1 <= s <= p:
        raise ConfigError(f"--stride {s}: must be 1 to the patch size {p}, so that every pixel is covered; leave it out for {max(1, p // 2)}")
    return p, s


def _starts(size: int, patch: int, stride: int) -> List[int]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def resolve_target(target: Union[None, str, int], labels: Sequence[str]) -> Optional[int]:
    """A label name or class index -> the class index (None: each image's predicted class).

    Raises:
        ConfigError: not a label of the model.
    """
    if target is None:
        return None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if 0 <= int(target) < len(labels):
            return int(target)
    elif isinstance(target, str) and target in labels:
        return list(labels).index(target)
    raise ConfigError(f"--target {target!r}: not a label of the model; choose one of {', '.join(labels)}")


def occlusion_map(predict: Predict, pixels: np.ndarray, target: Optional[int] = None, *, patch: Optional[int] = None,
                  stride: Optional[int] = None, fill: int = FILL, batch_size: int = BATCH) -> Explanation:
    """The occlusion-sensitivity map of one image.

    Args:
        predict: probabilities for a uint8 ``NxHxWxC`` batch (any ``N``) -> ``NxK``.
        pixels: the model's uint8 input, ``HxWxC``.
        target: class index to explain (default: the predicted class).
        patch, stride: side and step of the grey square in input pixels (see
            :func:`default_patch`).
        fill: the square's grey level.
        batch_size: occluded copies made and predicted at a time (memory: this many inputs).
    """
    pixels = np.asarray(pixels, np.uint8)
    h, w = pixels.shape[:2]
    patch, stride = check_patch(patch, stride, h, w)
    boxes = [(y, x) for y in _starts(h, patch, stride) for x in _starts(w, patch, stride)]
    # The clean image rides in the first batch: its probabilities are the baseline.
    items: List[Optional[Tuple[int, int]]] = [None, *boxes]
    scores: List[np.ndarray] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = np.repeat(pixels[None], len(chunk), axis=0)
        for i, box in enumerate(chunk):
            if box is not None:
                batch[i, box[0] : box[0] + patch, box[1] : box[1] + patch] = fill
        scores.append(np.asarray(predict(batch), np.float32))
    probs = np.concatenate(scores)
    base = probs[0]
    predicted = int(np.argmax(base))
    t = predicted if target is None else int(target)
    drops = base[t] - probs[1:, t]
    total = np.zeros((h, w), np.float64)
    count = np.zeros((h, w), np.float64)
    for (y, x), d in zip(boxes, drops):
        total[y : y + patch, x : x + patch] += d
        count[y : y + patch, x : x + patch] += 1
    heat = np.clip(total / count, 0.0, None)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    return Explanation(heat.astype(np.float32), t, predicted, base, max_drop=peak)


class BatchPredictor:
    """Probabilities for uint8 ``NxHxWxC`` batches of one bundle's model, ``batch_size`` per invoke.

    The batches run on an interpreter of the model's own, its input resized to ``batch_size``
    (the last batch padded), fed and read exactly as ``model`` is. When the model cannot be
    resized, gives other results in a batch than alone, or runs on a delegate (an Edge TPU
    compiles one batch size), ``model`` predicts one image at a time.
    """

    def __init__(self, model: TFLiteClassifier, source: Union[str, Path, bytes], batch_size: int = BATCH) -> None:
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self._interp: Any = None
        if not model.has_delegates and self.batch_size > 1:
            self._interp = self._batched(source)
        self.batched = self._interp is not None

    def _batched(self, source: Union[str, Path, bytes]) -> Any:
        m = self.model
        kwargs: Dict[str, Any] = {"num_threads": m.cpu_threads}
        if isinstance(source, bytes):
            kwargs["model_content"] = source
        else:
            kwargs["model_path"] = str(source)
        try:
            with native_output("loading the model for batches"):
                interp = m.backend.interpreter_class(**kwargs)
                index = interp.get_input_details()[0]["index"]
                interp.resize_tensor_input(index, [self.batch_size, *m.input.shape[1:]])
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            log.debug("one image per invoke: the model's input cannot take a batch (%s)", e)
            return None
        self._in, self._out = index, interp.get_output_details()[0]
        self._feed = input_feeder(m.input.dtype, m.input.scale, m.input.zero_point, m.input_mean, m.input_std)
        if tuple(self._out["shape"]) != (self.batch_size, m.num_classes):
            log.debug("one image per invoke: a batch gives output shape %s", tuple(self._out["shape"]))
            return None
        # Two different images, alone and in a batch, must get the same probabilities.
        probe = np.random.default_rng(0).integers(0, 256, (2, *m.input.shape[1:]), dtype=np.uint8)
        got = self._run(probe, interp)
        want = np.stack([m.predict(p) for p in probe])
        step = m.output_tensor.scale if m.output_tensor.quantized else 0.0
        if not np.allclose(got, want, atol=1e-4 + 2 * step):
            log.debug("one image per invoke: a batch gives other results than single images")
            return None
        return interp

    def _run(self, batch: np.ndarray, interp: Any) -> np.ndarray:
        n = len(batch)
        if n < self.batch_size:
            batch = np.concatenate([batch, np.repeat(batch[:1], self.batch_size - n, axis=0)])
        interp.set_tensor(self._in, self._feed(batch))
        interp.invoke()
        out = interp.get_tensor(self._out["index"])[:n]
        m = self.model
        out = dequantize(out, m.output_tensor.scale, m.output_tensor.zero_point) if m.output_tensor.quantized else out.astype(np.float32)
        return softmax(out, axis=-1) if m.output_kind == "logits" else out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._interp is None:
            return self.model.predict_batch(batch)
        return np.concatenate([self._run(batch[i : i + self.batch_size], self._interp) for i in range(0, len(batch), self.batch_size)])


class OcclusionExplainer:
    """Occlusion maps of one bundle's model (see :func:`occlusion_map`).

    Args:
        model: the bundle's loaded model.
        source: its ``.tflite`` path (or bytes), loaded again for batches.
        info: the bundle's ``model.json`` (labels, preprocessing).
        patch, stride, fill, batch_size: as :func:`occlusion_map`; checked here, before any
            image is read.

    Raises:
        ConfigError: ``patch`` or ``stride`` out of range for the model's input.
    """

    method = "occlusion"

    def __init__(self, model: TFLiteClassifier, source: Union[str, Path, bytes], info: ModelInfo, *,
                 patch: Optional[int] = None, stride: Optional[int] = None, fill: int = FILL, batch_size: int = BATCH) -> None:
        self.labels = tuple(info.labels)
        self.spec = info.preprocess
        self.model_name = "<model bytes>" if isinstance(source, bytes) else str(source)
        self.patch, self.stride = check_patch(patch, stride, *self.spec.size)
        self.fill = int(fill)
        self._predict = BatchPredictor(model, source, batch_size)

    @property
    def params(self) -> Dict[str, Any]:
        return {"patch": self.patch, "stride": self.stride, "fill": self.fill,
                "batch": self._predict.batch_size if self._predict.batched else 1}

    def explain(self, pixels: np.ndarray, target: Optional[int] = None) -> Explanation:
        return occlusion_map(self._predict, pixels, target, patch=self.patch, stride=self.stride, fill=self.fill,
                             batch_size=self._predict.batch_size)


def _output_name(path: Path, used: Set[str], inputs: Set[Path], out: Path) -> str:
    """``<stem>.png``, numbered when taken, never the name of an input image."""
    stem = path.stem or "image"
    name, n = f"{stem}.png", 1
    while name in used or (out / name).resolve() in inputs:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def caption_lines(ex: Explanation, labels: Sequence[str], method: str, extra: str = "") -> List[str]:
    """``label score`` (and the explained label when it is not the predicted one), then the method."""
    first = f"{labels[ex.predicted]} {float(ex.probs[ex.predicted]):.2f}"
    if ex.target != ex.predicted:
        first = f"{labels[ex.target]} {ex.score:.2f} (predicted {first})"
    return [first, f"{method}{': ' + extra if extra else ''}"]


def explain_files(paths: Sequence[Path], explainer: Any, out: Path, *, target: Union[None, str, int] = None,
                  progress: bool = True) -> Dict[str, Any]:
    """Explain image files and write ``<stem>.png`` for each, and ``index.json``, into ``out``.

    Args:
        paths: image files (unreadable ones are skipped and listed in the index).
        explainer: an :class:`OcclusionExplainer`, or anything with ``method``, ``labels``,
            ``spec``, ``model_name``, ``params`` and ``explain(pixels, target)``.
        out: the folder to write (created; pictures of the same name are replaced, and those an
            earlier run listed in its ``index.json`` that this run does not write are removed, so
            the folder holds what the index lists; other files are left alone).
        target: a label (or class index) to explain in every image instead of its prediction.
        progress: show a progress bar on a terminal.

    Returns:
        The index that ``index.json`` holds: ``method``, ``model``, ``input_size``, ``labels``,
        ``params``, ``images`` (``image``, ``output``, ``label``, ``score``, ``target``,
        ``target_score``, ``peak`` as ``[x, y]`` in input pixels, and ``max_drop`` for
        occlusion) and ``skipped`` (``image``, ``reason``).

    Raises:
        ConfigError: ``out`` is a file, or ``target`` is not a label of the model.
    """
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the pictures and index.json")
    t = resolve_target(target, explainer.labels)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_outputs(out)
    inputs = {Path(p).resolve() for p in paths}
    used: Set[str] = set()
    images: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    labels = explainer.labels
    with tqdm(total=len(paths), desc="explaining", unit="img", disable=None if progress else True, leave=False, file=sys.stderr) as bar:
        for path in map(Path, paths):
            try:
                pixels = load_for_model(path, explainer.spec)
            except ImageReadError as e:
                skipped.append({"image": str(path), "reason": str(e).split(": ", 1)[-1]})
                bar.update(1)
                continue
            ex = explainer.explain(pixels, t)
            name = _output_name(path, used, inputs, out)
            write_bytes(out / name, encode_png(explanation_panel(pixels, ex.heatmap, caption_lines(ex, labels, explainer.method, path.name))))
            y, x = np.unravel_index(int(np.argmax(ex.heatmap)), ex.heatmap.shape)
            entry: Dict[str, Any] = {
                "image": str(path), "output": name, "label": labels[ex.predicted], "score": round(float(ex.probs[ex.predicted]), 6),
                "target": labels[ex.target], "target_score": round(ex.score, 6), "peak": [int(x), int(y)],
            }
            if ex.max_drop is not None:
                entry["max_drop"] = round(ex.max_drop, 6)
            images.append(entry)
            bar.update(1)
    index = {"method": explainer.method, "model": explainer.model_name, "input_size": list(explainer.spec.size),
             "labels": list(labels), "params": explainer.params, "images": images, "skipped": skipped}
    write_json(out / "index.json", index)
    for name in earlier - {e["output"] for e in images}:
        (out / name).unlink(missing_ok=True)
    return index


def _earlier_outputs(out: Path) -> Set[str]:
    """Pictures the ``index.json`` already in ``out`` lists: plain ``.png`` names directly inside
    ``out`` only (the index is a file on disk, so anything else in it is ignored)."""
    try:
        entries = json.loads((out / "index.json").read_text(encoding="utf-8"))["images"]
        names = {e["output"] for e in entries if isinstance(e, dict) and isinstance(e.get("output"), str)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    root = out.resolve()
    return {n for n in names if n.endswith(".png") and Path(n).name == n and (out / n).resolve().parent == root}

