"""One check per documented Edge TPU operator limitation that the flatbuffer shows.

Each check takes an ``OpView`` and returns why the compiler will not map the operator, or None.
The limitations are the "known limitations" column of Coral's supported-operations table
(https://coral.ai/docs/edgetpu/models-intro/#supported-operations); ``ops_table`` says which
check applies to which operator and runtime version.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .flatbuffer import OpView, TensorInfo, enum_names, schema

Checker = Callable[[OpView], Optional[str]]


def _norm_axes(values: np.ndarray, rank: int) -> List[int]:
    return sorted({int(a) % rank for a in np.ravel(values)}) if rank else []


def dims_above_one(shape: Sequence[int]) -> int:
    """How many dimensions of ``shape`` are larger than 1."""
    return sum(1 for d in shape if d > 1)


def no_fused_activation(op: OpView) -> Optional[str]:
    """Pooling: no fused activation function."""
    act = getattr(op.options, "fusedActivationFunction", 0)
    if act:
        name = enum_names(schema().ActivationFunctionType).get(act, str(act))
        return f"fused activation {name}: {op.name} supports no fused activation function"
    return None


def concatenation(op: OpView) -> Optional[str]:
    """Concatenation: no fused activation; a constant input only as the zero padding of 2 inputs."""
    reason = no_fused_activation(op)
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


def same_dilation(op: OpView) -> Optional[str]:
    """Conv2d, and DepthwiseConv2d on runtime 13+: the same dilation in x and y."""
    h, w = getattr(op.options, "dilationHFactor", 1), getattr(op.options, "dilationWFactor", 1)
    if h != w:
        return f"dilation {h}x{w}: {op.name} must use the same dilation in x and y"
    return None


def no_dilation(op: OpView) -> Optional[str]:
    """DepthwiseConv2d on runtime <=12: no dilation at all."""
    h, w = getattr(op.options, "dilationHFactor", 1), getattr(op.options, "dilationWFactor", 1)
    if (h, w) != (1, 1):
        return f"dilation {h}x{w}: dilated depthwise kernels need Edge TPU runtime 13+"
    return None


def fully_connected(op: OpView) -> Optional[str]:
    """FullyConnected: the default weights format and a one-dimensional output."""
    if getattr(op.options, "weightsFormat", 0) != 0:
        return "weights not in the default format (only the default fully-connected weights format is supported)"
    out = op.outputs[0].shape if op.outputs else ()
    if dims_above_one(out) > 1:
        return f"output shape {list(out)}: the output tensor must be one-dimensional"
    return None


def _axes(op: OpView, axis_input: int, data_input: int = 0) -> Tuple[Optional[List[int]], int]:
    data = op.inputs[data_input]
    rank = len(data.shape) if data is not None else 0
    values = op.const_values(axis_input)
    return (None if values is None else _norm_axes(values, rank)), rank


def no_batch_axis(op: OpView, axis_input: int = 1, data_input: int = 0, what: str = "reduce") -> Optional[str]:
    """Reductions and splits: constant axes, none of them the batch dimension."""
    axes, rank = _axes(op, axis_input, data_input)
    if axes is None:
        return f"the {what} axes are not a compile-time constant"
    # TFLite tensors put the batch first (NHWC, [batch, features]); a rank-1 tensor has none.
    if rank >= 2 and 0 in axes:
        return f"{what} along the batch dimension (axes {axes})"
    return None


def mean_13(op: OpView) -> Optional[str]:
    """Mean on runtime 13+: no batch reduction; a z-reduction needs a multiple of 4 channels."""
    reason = no_batch_axis(op)
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


def mean_12(op: OpView) -> Optional[str]:
    """Mean on runtime <=12: no batch reduction, and reduce along x and/or y only."""
    reason = no_batch_axis(op)
    if reason:
        return reason
    axes, rank = _axes(op, 1)
    return _xy_only(axes, rank, "reduction")


def _paddings(op: OpView) -> Tuple[Optional[np.ndarray], str]:
    values = op.const_values(1)
    if values is None:
        return None, "the paddings are not a compile-time constant"
    return values.reshape(-1, 2), ""


def pad_13(op: OpView) -> Optional[str]:
    """Pad on runtime 13+: constant paddings, none in the batch dimension."""
    pads, reason = _paddings(op)
    if pads is None:
        return reason
    if len(pads) >= 2 and np.any(pads[0] != 0):
        return f"padding in the batch dimension ({pads[0].tolist()})"
    return None


def pad_12(op: OpView) -> Optional[str]:
    """Pad on runtime <=12: constant paddings along x and/or y only."""
    pads, reason = _paddings(op)
    if pads is None:
        return reason
    axes = [i for i, row in enumerate(pads) if np.any(row != 0)]
    return _xy_only(axes, len(pads), "padding")


def pack(op: OpView) -> Optional[str]:
    """Pack: not along the batch dimension."""
    rank = len(op.outputs[0].shape) if op.outputs else 0
    if rank >= 2 and getattr(op.options, "axis", 0) % rank == 0:
        return "packing in the batch dimension"
    return None


def prelu(op: OpView) -> Optional[str]:
    """PReLU: alpha has no dimension > 1 but the innermost."""
    alpha = op.inputs[1] if len(op.inputs) > 1 else None
    if alpha is not None and dims_above_one(alpha.shape[:-1]):
        return f"alpha shape {list(alpha.shape)}: alpha must be 1-dimensional (only the innermost dimension > 1)"
    return None


def softmax(op: OpView) -> Optional[str]:
    """Softmax: a 1-D input of at most 16,000 elements."""
    shape = op.inputs[0].shape
    if dims_above_one(shape) > 1:
        return f"input shape {list(shape)}: Softmax supports only a 1-D input tensor"
    size = int(np.prod(shape)) if shape else 1
    if size > 16000:
        return f"input of {size} elements: Softmax supports at most 16,000"
    return None


def split(op: OpView) -> Optional[str]:
    """Split: constant axis, not the batch dimension."""
    return no_batch_axis(op, axis_input=0, data_input=1, what="split")


def squeeze_12(op: OpView) -> Optional[str]:
    """Squeeze on runtime <=12: only leading 1s, which need no relayout."""
    shape = op.inputs[0].shape
    dims = list(getattr(op.options, "squeezeDims", None) or [])
    squeezed = {d % len(shape) for d in dims} if dims else {i for i, d in enumerate(shape) if d == 1}
    leading = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(d >= leading for d in squeezed):
        return f"squeezing a non-leading dimension of {list(shape)} needs a relayout (runtime <=12)"
    return None


def strided_slice(op: OpView) -> Optional[str]:
    """StridedSlice: all strides 1, no ellipsis mask, no new-axis mask."""
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
