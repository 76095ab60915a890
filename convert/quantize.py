"""Keras model -> .tflite bytes in each quantisation mode."""

from __future__ import annotations

import random
import sys
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .config import ConvertConfig
from edgesight.edge.errors import EdgesightError
from edgesight.edge.native_log import native_output
from edgesight.training.data import Sample


class ConversionError(EdgesightError):
    """The TFLite converter rejected the model."""


def _tf():
    from edgesight.training.tf import import_tensorflow

    return import_tensorflow()


@contextmanager
def captured_native_output(enabled: bool = True, what: str = "converting") -> Iterator[Tuple[TextIO, List[str]]]:
    """Capture file descriptors 1 and 2 while the converter runs (see :mod:`edgesight.edge.native_log`).

    The TFLite converter's C++ logging and Keras' export printout write straight to the file
    descriptors, burying the report in hundreds of lines; what they wrote is logged at DEBUG
    (at ERROR if the block raises). Yields a stream on the original stderr (for progress bars)
    and a list that receives the captured text afterwards.
    """
    captured: List[str] = []
    if not enabled:
        yield sys.stderr, captured
        return
    with native_output(what, stdout=True) as out:
        yield out.stream, captured
    captured.append(out.text)


def stratified_sample(samples: Sequence[Sample], n: int, seed: int = 0) -> List[Sample]:
    """Up to ``n`` samples with every class represented in proportion (at least one each)."""
    by_class: Dict[str, List[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.path):
        by_class.setdefault(s.label, []).append(s)
    if len(samples) <= n:
        return list(samples)
    rng = random.Random(seed)
    for items in by_class.values():
        rng.shuffle(items)
    total = len(samples)
    quota = {c: max(1, round(n * len(v) / total)) for c, v in by_class.items()}
    picked = [s for c, v in sorted(by_class.items()) for s in v[: quota[c]]]
    rng.shuffle(picked)
    picked = picked[:n]
    if len(picked) < n:
        # Rounding left a few slots: fill them from what was not picked, still seeded.
        chosen = {s.path for s in picked}
        rest = [s for c, v in sorted(by_class.items()) for s in v if s.path not in chosen]
        rng.shuffle(rest)
        picked += rest[: n - len(picked)]
    return picked


def batch1_model(model):
    """The same model with a static batch of 1, which the Edge TPU compiler, MediaPipe and the
    camera loop all expect (a Keras model's batch is otherwise dynamic)."""
    from edgesight.training.tf import import_keras

    keras = import_keras()

    shape = tuple(model.inputs[0].shape[1:])
    inp = keras.Input(shape, batch_size=1, name="image")
    return keras.Model(inp, model(inp, training=False), name=model.name)


def convert_keras(
    model,
    cfg: ConvertConfig,
    calibration: Optional[np.ndarray] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> bytes:
    """Convert a Keras classifier (raw 0-255 pixel input) to TFLite.

    Args:
        model: the Keras model.
        cfg: quantisation mode and options.
        calibration: uint8 ``NxHxWxC`` images preprocessed exactly as in training (int8 only).
        progress: called with 1 per calibration image fed.

    Returns:
        The .tflite file contents.

    Raises:
        ConversionError: no calibration images for int8, or the converter failed.
    """
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(batch1_model(model))
    if cfg.quant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif cfg.quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif cfg.quant == "int8":
        if calibration is None or len(calibration) == 0:
            raise ConversionError("int8 conversion needs calibration images; give a run folder or --calib DATA")
        images = np.asarray(calibration)

        def representative():
            for img in images:
                yield [img[None].astype(np.float32)]
                if progress:
                    progress(1)

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.uint8 if cfg.io == "uint8" else tf.int8
        converter.inference_input_type = io
        converter.inference_output_type = io
        if cfg.per_tensor:
            converter._experimental_disable_per_channel = True
    try:
        result = bytes(converter.convert())
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "; try --quant float16 or --per-tensor" if cfg.quant == "int8" else ""
        raise ConversionError(f"the TFLite converter failed ({first}){hint}") from e
    return pin_pixel_input(result) if cfg.quant == "int8" and cfg.io == "uint8" else result


def pin_pixel_input(tflite: bytes) -> bytes:
    """Give a uint8-input int8 model the input quantisation ``scale 1, zero point 0``.

    Calibration sets the input range from the images it saw; a set whose brightest pixel is
    251 yields scale 251/255, so brighter camera pixels saturate and every frame would need a
    float rescale. The converter feeds a uint8 input through a QUANTIZE op into the int8 graph,
    and QUANTIZE requantises between any two scales, so declaring the uint8 input as plain
    pixels (0..255 -> 0..255) is exact: the op maps them onto the calibrated int8 range.
    Models without that structure are returned unchanged.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    tree = tfl.ModelT.InitFromPackedBuf(tflite, 0)
    graph = tree.subgraphs[0]
    if len(graph.inputs) != 1:
        return tflite
    tin = graph.tensors[graph.inputs[0]]
    consumers = [op for op in graph.operators if graph.inputs[0] in list(op.inputs)]
    if tin.type != tfl.TensorType.UINT8 or len(consumers) != 1:
        return tflite
    op = consumers[0]
    code = tree.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    out = graph.tensors[op.outputs[0]]
    if builtin != tfl.BuiltinOperator.QUANTIZE or out.type != tfl.TensorType.INT8:
        return tflite
    tin.quantization.scale = np.array([1.0], np.float32)
    tin.quantization.zeroPoint = np.array([0], np.int64)
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
