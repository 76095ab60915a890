"""Coral's table of the operations the Edge TPU supports, as data.

Source: https://coral.ai/docs/edgetpu/models-intro/#supported-operations, Table 1: each
operation, the Edge TPU runtime version it needs and its known limitations. Each row carries the
check (``checks``) of the limitations that can be read from the flatbuffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from . import checks
from .checks import Checker

# The newest Edge TPU runtime (libedgetpu), produced by compiler 16.0. Reports default to it.
LATEST_RUNTIME = 14


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
        """Whether the row holds on Edge TPU runtime version ``runtime``."""
        return runtime >= self.min_runtime and (self.max_runtime is None or runtime <= self.max_runtime)


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
    "AVERAGE_POOL_2D": (_row("AveragePool2d", "All", NO_FUSED, checks.no_fused_activation),),
    "CONCATENATION": (
        _row(
            "Concatenation", "All",
            NO_FUSED + " If any input is a compile-time constant tensor, there must be only 2 inputs, "
            "and this constant tensor must be all zeroes (effectively, a zero-padding op).",
            checks.concatenation,
        ),
    ),
    "CONV_2D": (_row("Conv2d", "All", "Must use the same dilation in x and y dimensions.", checks.same_dilation),),
    "DEPTHWISE_CONV_2D": (
        _row("DepthwiseConv2d", "<=12", "Dilated conv kernels are not supported.", checks.no_dilation),
        _row("DepthwiseConv2d", "13+", "Must use the same dilation in x and y dimensions.", checks.same_dilation),
    ),
    "EXPAND_DIMS": (_row("ExpandDims", "13+"),),
    "FULLY_CONNECTED": (
        _row(
            "FullyConnected", "All",
            "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional.",
            checks.fully_connected,
        ),
    ),
    "L2_NORMALIZATION": (_row("L2Normalization", "All"),),
    "LOGISTIC": (_row("Logistic", "All"),),
    "LSTM": (_row("LSTM", "14+", "Unidirectional LSTM only."),),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (_row("LSTM", "14+", "Unidirectional LSTM only."),),
    "MAXIMUM": (_row("Maximum", "All"),),
    "MAX_POOL_2D": (_row("MaxPool2d", "All", NO_FUSED, checks.no_fused_activation),),
    "MEAN": (
        _row("Mean", "<=12", "No reduction in batch dimension. Supports reduction along x- and/or y-dimensions only.", checks.mean_12),
        _row("Mean", "13+", "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.", checks.mean_13),
    ),
    "MINIMUM": (_row("Minimum", "All"),),
    "MUL": (_row("Mul", "All"),),
    "PACK": (_row("Pack", "13+", "No packing in batch dimension.", checks.pack),),
    "PAD": (
        _row("Pad", "<=12", "Supports padding along x- and/or y-dimensions only.", checks.pad_12),
        _row("Pad", "13+", "No padding in batch dimension.", checks.pad_13),
    ),
    "PRELU": (
        _row(
            "PReLU", "13+",
            "Alpha must be 1-dimensional (only the innermost dimension can be >1 size). If using Keras "
            "PReLU with 4D input (batch, height, width, channels), then shared_axes must be [1,2] so "
            "each filter has only one set of parameters.",
            checks.prelu,
        ),
    ),
    "QUANTIZE": (_row("Quantize", "13+"),),
    "REDUCE_MAX": (_row("ReduceMax", "14+", NO_BATCH, checks.no_batch_axis),),
    "REDUCE_MIN": (_row("ReduceMin", "14+", NO_BATCH, checks.no_batch_axis),),
    "RELU": (_row("ReLU", "All"),),
    "RELU6": (_row("ReLU6", "All"),),
    "RELU_N1_TO_1": (_row("ReLUN1To1", "All"),),
    "RESHAPE": (_row("Reshape", "All", "Certain reshapes might not be mapped for large tensor sizes."),),
    "RESIZE_BILINEAR": (_row("ResizeBilinear", "All", RESIZE_NOTE),),
    "RESIZE_NEAREST_NEIGHBOR": (_row("ResizeNearestNeighbor", "All", RESIZE_NOTE),),
    "RSQRT": (_row("Rsqrt", "14+"),),
    "SLICE": (_row("Slice", "All"),),
    "SOFTMAX": (_row("Softmax", "All", "Supports only 1-D input tensor with a max of 16,000 elements.", checks.softmax),),
    "SPACE_TO_DEPTH": (_row("SpaceToDepth", "All"),),
    "SPLIT": (_row("Split", "All", "No splitting in batch dimension.", checks.split),),
    "SQUEEZE": (
        _row(
            "Squeeze", "<=12",
            "Supported only when input tensor dimensions that have leading 1s (that is, no relayout "
            "needed). For example input tensor with [y][x][z] = 1,1,10 or 1,5,10 is ok. But "
            "[y][x][z] = 5,1,10 is not supported.",
            checks.squeeze_12,
        ),
        _row("Squeeze", "13+"),
    ),
    "STRIDED_SLICE": (
        _row(
            "StridedSlice", "All",
            "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and "
            "with ellipsis-axis-mask == 0, and new-axis-max == 0.",
            checks.strided_slice,
        ),
    ),
    "SUB": (_row("Sub", "All"),),
    "SUM": (_row("Sum", "13+", NO_BATCH, checks.no_batch_axis),),
    "SQUARED_DIFFERENCE": (_row("Squared-difference", "14+"),),
    "TANH": (_row("Tanh", "All"),),
    "TRANSPOSE": (_row("Transpose", "14+"),),
    "TRANSPOSE_CONV": (_row("TransposeConv", "13+"),),
}

# Limitations the flatbuffer cannot show: reported as warnings when such an op is mapped.
UNCHECKABLE_NOTES = {"RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}
