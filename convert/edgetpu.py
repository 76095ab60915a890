"""Edge TPU readiness report for a .tflite model, and the call to Coral's ``edgetpu_compiler``.

The report predicts, from the flatbuffer alone, which operators the Edge TPU compiler will map
to the Edge TPU. It needs only ``ai-edge-litert`` (for the schema), never TensorFlow, so it runs
anywhere the base install does; the compiler itself runs only on x86-64 Debian/Ubuntu.

Sources (Coral documentation; every constraint encoded below is stated there):
  https://coral.ai/docs/edgetpu/models-intro/#supported-operations
      "TensorFlow models on the Edge TPU": the model requirements (tensors 8-bit quantized,
      tensor sizes constant at compile time, model parameters such as bias tensors constant at
      compile time, tensors at most 3-dimensional or only the 3 innermost dimensions > 1) and
      Table 1, the supported operations with the Edge TPU runtime version each needs and its
      known limitations. The compiler "cannot partition the model more than once, so as soon as
      an unsupported operation occurs, that operation and everything after it executes on the
      CPU, even if supported operations occur later".
  https://coral.ai/docs/edgetpu/compiler/
      System requirements, install commands, flags (``-s/--show_operations``, ``-o/--out_dir``,
      ``-m/--min_runtime_version``, ``-n/--num_segments``), compiler and runtime versions.

Compiler 16 adds ``-a/--enable_multiple_subgraphs`` ("experimental flag"), which may map
supported operations that follow an unsupported one; this report models the documented default.
``-n/--num_segments`` splits the compiled model into segments for pipelining across several
Edge TPUs (https://coral.ai/docs/edgetpu/pipeline/); it does not change which ops are mapped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import BundleError, MissingDependencyError

# The newest Edge TPU runtime (libedgetpu), produced by compiler 16.0. Reports default to it.
LATEST_RUNTIME = 14

# Compiler version (major.minor) -> runtime version its models need by default; a model compiled
# for a newer runtime fails to load on an older one ("Package requires runtime version (14),
# which is newer than this runtime version (13)"). ``-m N`` compiles for an older runtime.
COMPILER_RUNTIME_VERSIONS: Dict[str, int] = {"16.0": 14, "15.0": 13, "14.1": 13}

INSTALL_COMMANDS = (
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | '
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && "
    "sudo apt-get update && sudo apt-get install edgetpu-compiler"
)
NOT_FOUND_REASON = (
    "edgetpu_compiler not found: it runs only on x86-64 Linux (Debian/Ubuntu); install it with: "
    + INSTALL_COMMANDS
)

FOLLOWS_UNMAPPED = "follows an unmapped op"
MAPPED_STATUS = "Mapped to Edge TPU"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

EIGHT_BIT = ("INT8", "UINT8")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
# Constant index/shape/bias parameters (conv bias, reshape shape, mean axes, pad paddings, ...)
# are int32 in every quantized model the converter writes; the compiler takes them as they are.
PARAM_TYPES = ("INT32", "INT64")
NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:
        raise MissingDependencyError(
            f"reading a .tflite model needs the Python package 'ai-edge-litert' ({e}): pip install ai-edge-litert"
        ) from e
    return schema_py_generated


def _enum_names(enum_class) -> Dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph as the checks see it."""

    index: int
    name: str
    dtype: str
    shape: Tuple[int, ...]
    signature: Optional[Tuple[int, ...]]
    const: bool
    data: Optional[np.ndarray]
    scale: Tuple[float, ...]
    zero_point: Tuple[int, ...]

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"index": self.index, "name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.signature is not None and self.signature != self.shape:
            d["shape_signature"] = list(self.signature)
        if self.const:
            d["const"] = True
        return d


@dataclass(frozen=True)
class OpView:
    """An operator with its tensors resolved (``None`` for an omitted optional input)."""

    name: str
    inputs: Tuple[Optional[TensorInfo], ...]
    outputs: Tuple[TensorInfo, ...]
    options: Any

    def const_values(self, i: int) -> Optional[np.ndarray]:
        """The constant data of input ``i``, or None if it is absent or not a constant."""
        t = self.inputs[i] if i < len(self.inputs) else None
        return None if t is None or t.data is None else t.data


Checker = Callable[[OpView], Optional[str]]


@dataclass(frozen=True)
class OpRow:
    """One row of Coral's supported-operations table.

    Attributes:
        doc_name: the operation name as the table prints it.
        min_runtime: first Edge TPU runtime version the row applies to (1 for "All").
        max_runtime: last runtime version it applies to ("<=12" rows), or None.
        notes: the table's "known limitations", verbatim in substance.
        check: tests the limitations that can be read from the flatbuffer; returns the reason
            the op is not mapped, or None.
    """

    doc_name: str
    min_runtime: int
    max_runtime: Optional[int]
    notes: str
    check: Optional[Checker] = None

    def applies(self, runtime: int) -> bool:
        return runtime >= self.min_runtime and (self.max_runtime is None or runtime <= self.max_runtime)


def _norm_axes(values: np.ndarray, rank: int) -> List[int]:
    return sorted({int(a) % rank for a in np.ravel(values)}) if rank else []


def _dims_above_one(shape: Sequence[int]) -> int:
    return sum(1 for d in shape if d > 1)


# ---- checkers: one per documented limitation that the flatbuffer shows ----------------------


def _no_fused_activation(op: OpView) -> Optional[str]:
    act = getattr(op.options, "fusedActivationFunction", 0)
    if act:
        name = _enum_names(_schema().ActivationFunctionType).get(act, str(act))
        return f"fused activation {name}: {op.name} supports no fused activation function"
    return None


def _concatenation(op: OpView) -> Optional[str]:
    reason = _no_fused_activation(op)
    if reason:
        return reason
    consts = [t for t in op.inputs if t is not None and t.const]
    if not consts:
        return None
    if len(op.inputs) != 2:
        return f"a constant input with {len(op.inputs)} inputs: a constant input is allowed only with exactly 2 inputs"
    if any(t.data is None or np.any(t.data != _zero_value(t)) for t in consts):
        return "a constant input that is not all zeros (only a zero-padding concatenation is supported)"
    return None


def _zero_value(t: TensorInfo) -> int:
    # "All zeros" means real value 0, which a quantized tensor stores as its zero point.
    return t.zero_point[0] if t.zero_point else 0


def _same_dilation(op: OpView) -> Optional[str]:
    h, w = getattr(op.options, "dilationHFactor", 1), getattr(op.options, "dilationWFactor", 1)
    if h != w:
        return f"dilation {h}x{w}: {op.name} must use the same dilation in x and y"
    return None


def _no_dilation(op: OpView) -> Optional[str]:
    h, w = getattr(op.options, "dilationHFactor", 1), getattr(op.options, "dilationWFactor", 1)
    if (h, w) != (1, 1):
        return f"dilation {h}x{w}: dilated depthwise kernels need Edge TPU runtime 13+"
    return None


def _fully_connected(op: OpView) -> Optional[str]:
    if getattr(op.options, "weightsFormat", 0) != 0:
        return "weights not in the default format (only the default fully-connected weights format is supported)"
    out = op.outputs[0].shape if op.outputs else ()
    if _dims_above_one(out) > 1:
        return f"output shape {list(out)}: the output tensor must be one-dimensional"
    return None


def _axes(op: OpView, axis_input: int, data_input: int = 0) -> Tuple[Optional[List[int]], int]:
    data = op.inputs[data_input]
    rank = len(data.shape) if data is not None else 0
    values = op.const_values(axis_input)
    return (None if values is None else _norm_axes(values, rank)), rank


def _no_batch_axis(op: OpView, axis_input: int = 1, data_input: int = 0, what: str = "reduce") -> Optional[str]:
    axes, rank = _axes(op, axis_input, data_input)
    if axes is None:
        return f"the {what} axes are not a compile-time constant"
    # TFLite tensors put the batch first (NHWC, [batch, features]); a rank-1 tensor has none.
    if rank >= 2 and 0 in axes:
        return f"{what} along the batch dimension (axes {axes})"
    return None


def _mean_13(op: OpView) -> Optional[str]:
    reason = _no_batch_axis(op)
    if reason:
        return reason
    axes, rank = _axes(op, 1)
    depth = op.inputs[0].shape[-1] if rank else 0
    if rank and rank - 1 in axes and depth % 4:
        return f"z-reduction over {depth} channels: the z-dimension must be a multiple of 4"
    return None


def _xy_only(axes: List[int], rank: int, what: str) -> Optional[str]:
    # The innermost three dimensions are [y][x][z]; x and y are the two before the last.
    xy = {rank - 3, rank - 2} if rank >= 3 else set()
    if any(a not in xy for a in axes):
        return f"{what} along axes {axes}: runtime <=12 supports x and/or y only"
    return None


def _mean_12(op: OpView) -> Optional[str]:
    reason = _no_batch_axis(op)
    if reason:
        return reason
    axes, rank = _axes(op, 1)
    return _xy_only(axes, rank, "reduction")


def _paddings(op: OpView) -> Tuple[Optional[np.ndarray], str]:
    values = op.const_values(1)
    if values is None:
        return None, "the paddings are not a compile-time constant"
    return values.reshape(-1, 2), ""


def _pad_13(op: OpView) -> Optional[str]:
    pads, reason = _paddings(op)
    if pads is None:
        return reason
    if len(pads) >= 2 and np.any(pads[0] != 0):
        return f"padding in the batch dimension ({pads[0].tolist()})"
    return None


def _pad_12(op: OpView) -> Optional[str]:
    pads, reason = _paddings(op)
    if pads is None:
        return reason
    axes = [i for i, row in enumerate(pads) if np.any(row != 0)]
    return _xy_only(axes, len(pads), "padding")


def _pack(op: OpView) -> Optional[str]:
    rank = len(op.outputs[0].shape) if op.outputs else 0
    if rank >= 2 and getattr(op.options, "axis", 0) % rank == 0:
        return "packing in the batch dimension"
    return None


def _prelu(op: OpView) -> Optional[str]:
    alpha = op.inputs[1] if len(op.inputs) > 1 else None
    if alpha is not None and _dims_above_one(alpha.shape[:-1]):
        return f"alpha shape {list(alpha.shape)}: alpha must be 1-dimensional (only the innermost dimension > 1)"
    return None


def _softmax(op: OpView) -> Optional[str]:
    shape = op.inputs[0].shape
    if _dims_above_one(shape) > 1:
        return f"input shape {list(shape)}: Softmax supports only a 1-D input tensor"
    size = int(np.prod(shape)) if shape else 1
    if size > 16000:
        return f"input of {size} elements: Softmax supports at most 16,000"
    return None


def _split(op: OpView) -> Optional[str]:
    return _no_batch_axis(op, axis_input=0, data_input=1, what="split")


def _squeeze_12(op: OpView) -> Optional[str]:
    shape = op.inputs[0].shape
    dims = list(getattr(op.options, "squeezeDims", None) or [])
    squeezed = {d % len(shape) for d in dims} if dims else {i for i, d in enumerate(shape) if d == 1}
    leading = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(d >= leading for d in squeezed):
        return f"squeezing a non-leading dimension of {list(shape)} needs a relayout (runtime <=12)"
    return None


def _strided_slice(op: OpView) -> Optional[str]:
    strides = op.const_values(3)
    if strides is None:
        return "the strides are not a compile-time constant"
    if np.any(strides != 1):
        return f"strides {strides.tolist()}: all strides must be 1"
    if getattr(op.options, "ellipsisMask", 0):
        return "ellipsis_mask is set: it must be 0"
    if getattr(op.options, "newAxisMask", 0):
        return "new_axis_mask is set: it must be 0"
    return None


def _row(doc: str, runtime: str, notes: str = "", check: Optional[Checker] = None) -> OpRow:
    if runtime == "All":
        return OpRow(doc, 1, None, notes, check)
    if runtime.startswith("<="):
        return OpRow(doc, 1, int(runtime[2:]), notes, check)
    return OpRow(doc, int(runtime.rstrip("+")), None, notes, check)


NO_FUSED = "No fused activation function."
NO_BATCH = "Cannot operate on the batch dimension."
RESIZE_NOTE = (
    "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may "
    "not be mapped to the Edge TPU to avoid loss in precision."
)
# Inputs that are model parameters (weights, bias; TransposeConv's output shape), which "are
# constant at compile-time". Checked first: the rank rule, which a 4-D filter would break, applies
# only to non-constant tensors.
PARAM_INPUTS: Dict[str, Tuple[int, ...]] = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (0, 1, 3),
}

# TFLite builtin operator -> the rows of Coral's Table 1 that cover it (two rows where the
# limitations differ between runtime <=12 and 13+). An operator not listed here is unsupported.
EDGETPU_OPS: Dict[str, Tuple[OpRow, ...]] = {
    "ADD": (_row("Add", "All"),),
    "AVERAGE_POOL_2D": (_row("AveragePool2d", "All", NO_FUSED, _no_fused_activation),),
    "CONCATENATION": (
        _row(
            "Concatenation", "All",
            NO_FUSED + " If any input is a compile-time constant tensor, there must be only 2 inputs, "
            "and this constant tensor must be all zeroes (effectively, a zero-padding op).",
            _concatenation,
        ),
    ),
    "CONV_2D": (_row("Conv2d", "All", "Must use the same dilation in x and y dimensions.", _same_dilation),),
    "DEPTHWISE_CONV_2D": (
        _row("DepthwiseConv2d", "<=12", "Dilated conv kernels are not supported.", _no_dilation),
        _row("DepthwiseConv2d", "13+", "Must use the same dilation in x and y dimensions.", _same_dilation),
    ),
    "EXPAND_DIMS": (_row("ExpandDims", "13+"),),
    "FULLY_CONNECTED": (
        _row(
            "FullyConnected", "All",
            "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional.",
            _fully_connected,
        ),
    ),
    "L2_NORMALIZATION": (_row("L2Normalization", "All"),),
    "LOGISTIC": (_row("Logistic", "All"),),
    "LSTM": (_row("LSTM", "14+", "Unidirectional LSTM only."),),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (_row("LSTM", "14+", "Unidirectional LSTM only."),),
    "MAXIMUM": (_row("Maximum", "All"),),
    "MAX_POOL_2D": (_row("MaxPool2d", "All", NO_FUSED, _no_fused_activation),),
    "MEAN": (
        _row("Mean", "<=12", "No reduction in batch dimension. Supports reduction along x- and/or y-dimensions only.", _mean_12),
        _row("Mean", "13+", "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.", _mean_13),
    ),
    "MINIMUM": (_row("Minimum", "All"),),
    "MUL": (_row("Mul", "All"),),
    "PACK": (_row("Pack", "13+", "No packing in batch dimension.", _pack),),
    "PAD": (
        _row("Pad", "<=12", "Supports padding along x- and/or y-dimensions only.", _pad_12),
        _row("Pad", "13+", "No padding in batch dimension.", _pad_13),
    ),
    "PRELU": (
        _row(
            "PReLU", "13+",
            "Alpha must be 1-dimensional (only the innermost dimension can be >1 size). If using Keras "
            "PReLU with 4D input (batch, height, width, channels), then shared_axes must be [1,2] so "
            "each filter has only one set of parameters.",
            _prelu,
        ),
    ),
    "QUANTIZE": (_row("Quantize", "13+"),),
    "REDUCE_MAX": (_row("ReduceMax", "14+", NO_BATCH, _no_batch_axis),),
    "REDUCE_MIN": (_row("ReduceMin", "14+", NO_BATCH, _no_batch_axis),),
    "RELU": (_row("ReLU", "All"),),
    "RELU6": (_row("ReLU6", "All"),),
    "RELU_N1_TO_1": (_row("ReLUN1To1", "All"),),
    "RESHAPE": (_row("Reshape", "All", "Certain reshapes might not be mapped for large tensor sizes."),),
    "RESIZE_BILINEAR": (_row("ResizeBilinear", "All", RESIZE_NOTE),),
    "RESIZE_NEAREST_NEIGHBOR": (_row("ResizeNearestNeighbor", "All", RESIZE_NOTE),),
    "RSQRT": (_row("Rsqrt", "14+"),),
    "SLICE": (_row("Slice", "All"),),
    "SOFTMAX": (_row("Softmax", "All", "Supports only 1-D input tensor with a max of 16,000 elements.", _softmax),),
    "SPACE_TO_DEPTH": (_row("SpaceToDepth", "All"),),
    "SPLIT": (_row("Split", "All", "No splitting in batch dimension.", _split),),
    "SQUEEZE": (
        _row(
            "Squeeze", "<=12",
            "Supported only when input tensor dimensions that have leading 1s (that is, no relayout "
            "needed). For example input tensor with [y][x][z] = 1,1,10 or 1,5,10 is ok. But "
            "[y][x][z] = 5,1,10 is not supported.",
            _squeeze_12,
        ),
        _row("Squeeze", "13+"),
    ),
    "STRIDED_SLICE": (
        _row(
            "StridedSlice", "All",
            "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and "
            "with ellipsis-axis-mask == 0, and new-axis-max == 0.",
            _strided_slice,
        ),
    ),
    "SUB": (_row("Sub", "All"),),
    "SUM": (_row("Sum", "13+", NO_BATCH, _no_batch_axis),),
    "SQUARED_DIFFERENCE": (_row("Squared-difference", "14+"),),
    "TANH": (_row("Tanh", "All"),),
    "TRANSPOSE": (_row("Transpose", "14+"),),
    "TRANSPOSE_CONV": (_row("TransposeConv", "13+"),),
}

# Limitations the flatbuffer cannot show: reported as warnings when such an op is mapped.
UNCHECKABLE_NOTES = {"RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}


# ---- reading the flatbuffer ----------------------------------------------------------------


def _tensor_infos(model_obj, model_bytes: bytes, graph, type_names: Dict[int, str]) -> List[TensorInfo]:
    infos = []
    for i, t in enumerate(graph.tensors or []):
        buf = model_obj.buffers[t.buffer] if model_obj.buffers and t.buffer < len(model_obj.buffers) else None
        raw: Optional[bytes] = None
        if buf is not None and buf.data is not None and len(buf.data):
            raw = bytes(np.asarray(buf.data, np.uint8))
        elif buf is not None and getattr(buf, "offset", 0) > 1:
            # Models over 2 GB keep buffers after the flatbuffer, addressed by offset and size.
            raw = model_bytes[buf.offset : buf.offset + buf.size]
        dtype = type_names.get(t.type, str(t.type))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        signature = None if t.shapeSignature is None else tuple(int(d) for d in t.shapeSignature)
        data = None
        if raw is not None and dtype in NUMPY_TYPES:
            arr = np.frombuffer(raw, NUMPY_TYPES[dtype])
            data = arr.reshape(shape) if int(np.prod(shape)) == arr.size else arr
        q = t.quantization
        scale = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ()))
        zp = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else ()))
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")
        infos.append(TensorInfo(i, name, dtype, shape, signature, raw is not None and not t.isVariable, data, scale, zp))
    return infos


def _op_name(code, op_names: Dict[int, str]) -> str:
    # Builtin codes above 127 live only in builtinCode; older files fill only the deprecated byte.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode.decode("utf-8", "replace") if isinstance(code.customCode, bytes) else str(code.customCode)
        return f"CUSTOM:{custom}"
    return name


def _tensor_reason(t: TensorInfo) -> Optional[str]:
    """The model requirements that apply to every tensor an op reads or writes."""
    if t.dtype in FLOAT_TYPES:
        kind = "constant" if t.const else "tensor"
        return f"float {kind} '{t.name}' ({t.dtype}): the Edge TPU needs 8-bit quantized (int8/uint8) tensors"
    if t.const:
        if t.dtype not in EIGHT_BIT + PARAM_TYPES:
            return f"constant '{t.name}' is {t.dtype}, not 8-bit quantized"
        return None
    if t.dtype not in EIGHT_BIT:
        return f"tensor '{t.name}' is {t.dtype}, not 8-bit quantized (int8/uint8)"
    if any(d < 0 for d in t.shape) or (t.signature is not None and any(d < 0 for d in t.signature[1:])):
        sig = list(t.signature if t.signature is not None else t.shape)
        return f"dynamic shape {sig} of '{t.name}': tensor sizes must be constant at compile time"
    if len(t.shape) > 3 and _dims_above_one(t.shape[:-3]):
        if t.shape[0] > 1:
            return f"batch size {t.shape[0]} > 1 in '{t.name}' {list(t.shape)}: only the 3 innermost dimensions may be > 1"
        return f"rank: '{t.name}' {list(t.shape)} has a dimension > 1 outside the 3 innermost"
    return None


def _own_reason(op: OpView, runtime: int) -> Optional[str]:
    if op.name == f"CUSTOM:{EDGETPU_CUSTOM_OP}":
        return None
    rows = EDGETPU_OPS.get(op.name)
    if rows is None:
        return f"unsupported op: {op.name} is not in the Edge TPU supported operations table"
    row = next((r for r in rows if r.applies(runtime)), None)
    if row is None:
        need = min(r.min_runtime for r in rows)
        return f"{op.name} needs Edge TPU runtime {need}+ (report made for runtime {runtime})"
    if op.name == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] is not None and not op.inputs[1].const:
        return "dynamic shape: the new shape is computed at run time, not constant at compile time"
    params = PARAM_INPUTS.get(op.name, ())
    for i in params:
        t = op.inputs[i] if i < len(op.inputs) else None
        if t is not None and not t.const:
            return f"parameter '{t.name}' is not a compile-time constant"
    for t in op.inputs + op.outputs:
        reason = _tensor_reason(t) if t is not None else None
        if reason:
            return reason
    return row.check(op) if row.check else None


def _io_entry(t: TensorInfo) -> Dict[str, Any]:
    per_tensor = len(t.scale) == 1
    return {
        "name": t.name,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "shape_signature": list(t.signature) if t.signature is not None else list(t.shape),
        "scale": (t.scale[0] if per_tensor else list(t.scale)) if t.scale else None,
        "zero_point": (t.zero_point[0] if per_tensor else list(t.zero_point)) if t.zero_point else None,
    }


def edgetpu_report(model: bytes, runtime_version: int = LATEST_RUNTIME) -> Dict[str, Any]:
    """Predict which operators of a .tflite model the Edge TPU compiler maps to the Edge TPU.

    Every operator of the main subgraph is listed in execution order and checked against the
    model requirements and the supported-operations table of Coral's documentation. Because the
    compiler partitions the graph only once, every operator after the first unmapped one is
    reported as running on the CPU (``cpu_after_unmapped``), whatever its own support.

    Args:
        model: the .tflite file contents.
        runtime_version: the Edge TPU runtime the model will run on (14 with compiler 16).

    Returns:
        A JSON-serialisable dict: ``ops`` (index, op, min_runtime, mapped, reason, own_reason,
        cpu_after_unmapped, inputs, outputs), ``num_ops``, ``num_mapped``, ``first_unmapped``
        (index or None), ``all_mapped``, ``io`` (``inputs``/``outputs`` with dtype, shape,
        shape_signature, scale, zero_point), ``runtime_version`` and ``warnings``.

    Raises:
        BundleError: the bytes are not a TFLite flatbuffer or the model has no subgraph.
        MissingDependencyError: ``ai-edge-litert`` is not installed.
    """
    schema = _schema()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise BundleError("not a TFLite model (no 'TFL3' identifier): pass the .tflite file contents")
    try:
        model_obj = schema.ModelT.InitFromPackedBuf(model, 0)
    except Exception as e:  # a damaged flatbuffer raises whatever the generated reader hits
        raise BundleError(f"cannot parse the TFLite model ({type(e).__name__}: {e}); re-export it") from e
    if not model_obj.subgraphs:
        raise BundleError("the TFLite model has no subgraph; re-export it")
    graph = model_obj.subgraphs[0]
    tensors = _tensor_infos(model_obj, model, graph, _enum_names(schema.TensorType))
    op_names = _enum_names(schema.BuiltinOperator)
    warnings: List[str] = []

    ops: List[Dict[str, Any]] = []
    first_unmapped: Optional[int] = None
    for i, op in enumerate(graph.operators or []):
        view = OpView(
            _op_name(model_obj.operatorCodes[op.opcodeIndex], op_names),
            tuple(tensors[j] if j >= 0 else None for j in (op.inputs if op.inputs is not None else ())),
            tuple(tensors[j] for j in (op.outputs if op.outputs is not None else ())),
            op.builtinOptions,
        )
        own = _own_reason(view, runtime_version)
        after = first_unmapped is not None
        if own and not after:
            first_unmapped = i
        rows = EDGETPU_OPS.get(view.name)
        ops.append({
            "index": i,
            "op": view.name,
            "min_runtime": min(r.min_runtime for r in rows) if rows else None,
            "mapped": not own and not after,
            "reason": FOLLOWS_UNMAPPED if after else own,
            "own_reason": own,
            "cpu_after_unmapped": after,
            "inputs": [t.to_dict() for t in view.inputs if t is not None],
            "outputs": [t.to_dict() for t in view.outputs],
        })

    io = {
        "inputs": [_io_entry(tensors[j]) for j in (graph.inputs if graph.inputs is not None else ())],
        "outputs": [_io_entry(tensors[j]) for j in (graph.outputs if graph.outputs is not None else ())],
    }
    warnings.extend(_warnings(model_obj, ops, io, first_unmapped))
    num_mapped = sum(1 for o in ops if o["mapped"])
    return {
        "runtime_version": runtime_version,
        "num_ops": len(ops),
        "num_mapped": num_mapped,
        "first_unmapped": first_unmapped,
        "all_mapped": first_unmapped is None and bool(ops),
        "io": io,
        "ops": ops,
        "warnings": warnings,
    }


def _warnings(model_obj, ops: List[Dict[str, Any]], io: Dict[str, Any], first_unmapped: Optional[int]) -> List[str]:
    out: List[str] = []
    if not ops:
        out.append("the model has no operators")
    if first_unmapped is not None:
        op = ops[first_unmapped]
        rest = len(ops) - first_unmapped - 1
        out.append(
            f"op #{first_unmapped} {op['op']} is not mapped ({op['own_reason']}); the compiler partitions the "
            f"graph once, so it and the {rest} op(s) after it run on the CPU"
        )
    for side in ("inputs", "outputs"):
        for t in io[side]:
            if t["dtype"] not in EIGHT_BIT:
                out.append(
                    f"model {side[:-1]} '{t['name']}' is {t['dtype']}: convert with "
                    f"inference_{side[:-1]}_type uint8 or int8 so the model's I/O is 8-bit"
                )
    for t in io["inputs"]:
        sig = t["shape_signature"]
        if sig and sig[0] < 0 and all(d >= 0 for d in sig[1:]):
            out.append(
                f"model input '{t['name']}' has a dynamic batch (shape_signature {sig}); Edge TPU tensor sizes "
                f"must be static and the report assumes the stored shape {t['shape']}: convert with a batch of 1"
            )
    if len(model_obj.subgraphs) > 1:
        out.append(f"the model has {len(model_obj.subgraphs)} subgraphs; only the main subgraph (0) is analysed")
    names = {o["op"] for o in ops}
    if f"CUSTOM:{EDGETPU_CUSTOM_OP}" in names:
        out.append("the model already contains an edgetpu-custom-op: it was compiled for the Edge TPU already")
    mapped_names = {o["op"] for o in ops if o["mapped"]}
    for name in sorted(UNCHECKABLE_NOTES & mapped_names):
        out.append(f"{name}: {EDGETPU_OPS[name][0].notes}")
    return out


def format_edgetpu_report(report: Dict[str, Any]) -> str:
    """A short terminal table: per op type the count, how many map, and why the others do not.

    Args:
        report: an ``edgetpu_report`` result (or the same loaded back from JSON).

    Returns:
        The table as text, without a trailing newline.
    """
    ops = report["ops"]
    first = report.get("first_unmapped")
    head = f"Edge TPU: {report['num_mapped']}/{report['num_ops']} ops mapped (runtime {report.get('runtime_version', LATEST_RUNTIME)})"
    if first is not None:
        head += f"; first unmapped: #{first} {ops[first]['op']}"
    lines = [head, f"{'op':<26}{'count':>6}{'edgetpu':>9}{'cpu':>5}  why not mapped"]
    order: List[str] = []
    for o in ops:
        if o["op"] not in order:
            order.append(o["op"])
    for name in order:
        group = [o for o in ops if o["op"] == name]
        mapped = sum(1 for o in group if o["mapped"])
        # An op's own problem says more than "follows an unmapped op": it would still block
        # mapping once the earlier op is fixed.
        reasons = Counter(o.get("own_reason") or o["reason"] for o in group if not o["mapped"])
        why = "; ".join(r if n == 1 else f"{r} (x{n})" for r, n in reasons.most_common())
        lines.append(f"{name:<26}{len(group):>6}{mapped:>9}{len(group) - mapped:>5}  {why}".rstrip())
    for side in ("inputs", "outputs"):
        for t in report["io"][side]:
            quant = f" scale {t['scale']} zero_point {t['zero_point']}" if t.get("scale") is not None else ""
            lines.append(f"{side[:-1]} {t['name']}: {t['dtype']} {t['shape']}{quant}")
    lines.extend(f"warning: {w}" for w in report.get("warnings", []))
    return "\n".join(lines)


# ---- the compiler -----------------------------------------------------------------------------

_VERSION_RE = re.compile(r"Edge TPU Compiler version (\S+)")
_OP_LINE_RE = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_COUNT_RES = {
    "num_ops_edgetpu": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "num_ops_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "num_subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "total_ops": re.compile(r"Total number of operations:\s*(\d+)"),
}


def parse_compiler_log(text: str) -> Dict[str, Any]:
    """Read the compiler's version, op table and op counts from its output or ``.log`` file.

    The op table follows an ``Operator  Count  Status`` header, one line per op type and status,
    e.g. ``CONV_2D  11  Mapped to Edge TPU`` or ``HARD_SWISH  2  Operation not supported``.

    Args:
        text: stdout of ``edgetpu_compiler -s`` or the ``<stem>_edgetpu.log`` it writes.

    Returns:
        ``version`` (str or None), ``runtime_version`` (int or None, from the version table),
        ``ops`` (list of op, count, status, mapped) and whichever op counts the text states.
    """
    version = _VERSION_RE.search(text)
    ver = version.group(1) if version else None
    ops: List[Dict[str, Any]] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        m = _OP_LINE_RE.match(line.strip()) if in_table else None
        if m:
            status = m.group(3)
            ops.append({"op": m.group(1), "count": int(m.group(2)), "status": status, "mapped": status == MAPPED_STATUS})
    out: Dict[str, Any] = {
        "version": ver,
        "runtime_version": COMPILER_RUNTIME_VERSIONS.get(".".join(ver.split(".")[:2])) if ver else None,
        "ops": ops,
    }
    for key, rx in _COUNT_RES.items():
        m = rx.search(text)
        if m:
            out[key] = int(m.group(1))
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_edgetpu_compiler(
    tflite_path: Path,
    out_dir: Path,
    timeout: float = 300,
    min_runtime_version: Optional[int] = None,
) -> Dict[str, Any]:
    """Compile a model with ``edgetpu_compiler -s -o OUT_DIR MODEL`` when the compiler is installed.

    Args:
        tflite_path: the full-integer .tflite model.
        out_dir: where the compiler writes ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log``.
        timeout: seconds before the compiler is stopped.
        min_runtime_version: passed as ``-m`` to target an older Edge TPU runtime.

    Returns:
        ``compiled`` (bool), ``path`` (the compiled model, or None), ``reason`` (why not
        compiled, or None), ``log`` (the compiler's output, and its .log file when written),
        ``version`` and ``runtime_version`` of the compiler, ``ops`` (the per-op status table
        from the log) and the op counts the log states. A missing compiler, a non-zero exit or a
        timeout is reported in ``reason``, never raised.

    Raises:
        BundleError: ``tflite_path`` does not exist.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    if not tflite_path.is_file():
        raise BundleError(f"{tflite_path}: no such model file; convert the model first")
    result: Dict[str, Any] = {"compiled": False, "path": None, "reason": None, "log": "", "version": None,
                              "runtime_version": None, "ops": []}
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        result["reason"] = NOT_FOUND_REASON
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-s", "-o", str(out_dir)]
    if min_runtime_version is not None:
        cmd += ["-m", str(min_runtime_version)]
    cmd.append(str(tflite_path))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        partial = "".join(s.decode() if isinstance(s, bytes) else s for s in (e.stdout, e.stderr) if s)
        result.update(reason=f"edgetpu_compiler timed out after {timeout:g} s", log=partial)
        return result
    except OSError as e:
        result["reason"] = f"edgetpu_compiler could not be started: {e}"
        return result
    log = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
    parsed = parse_compiler_log(log)
    log_file = out_dir / f"{tflite_path.stem}_edgetpu.log"
    if log_file.is_file():
        file_text = log_file.read_text(errors="replace")
        log += "\n" + file_text
        result["log_file"] = str(log_file)
        # -s prints the op table on stdout too; the .log file is the fallback when it did not.
        if not parsed["ops"]:
            parsed["ops"] = parse_compiler_log(file_text)["ops"]
    result.update(parsed, log=log)
    if proc.returncode != 0:
        result["reason"] = _last_line(proc.stdout + "\n" + proc.stderr)
        return result
    compiled = out_dir / f"{tflite_path.stem}_edgetpu.tflite"
    if not compiled.is_file():
        result["reason"] = f"edgetpu_compiler exited 0 but wrote no {compiled.name}"
        return result
    result.update(compiled=True, path=str(compiled))
    return result
