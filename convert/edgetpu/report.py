"""Edge TPU readiness report: which operators of a .tflite model the compiler maps to the Edge TPU.

The prediction is made from the flatbuffer alone, against the model requirements and the
supported-operations table of https://coral.ai/docs/edgetpu/models-intro/#supported-operations:
tensors 8-bit quantized, tensor sizes constant at compile time, model parameters such as bias
tensors constant at compile time, tensors at most 3-dimensional or only the 3 innermost
dimensions > 1. The compiler "cannot partition the model more than once, so as soon as an
unsupported operation occurs, that operation and everything after it executes on the CPU, even if
supported operations occur later".

Compiler 16 adds ``-a/--enable_multiple_subgraphs`` ("experimental flag"), which may map
supported operations that follow an unsupported one; this report models the documented default.
``-n/--num_segments`` splits the compiled model into segments for pipelining across several
Edge TPUs (https://coral.ai/docs/edgetpu/pipeline/); it does not change which ops are mapped.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from edgesight.edge.errors import BundleError

from .checks import dims_above_one
from .flatbuffer import OpView, TensorInfo, enum_names, op_name, schema, tensor_infos
from .ops_table import EDGETPU_OPS, LATEST_RUNTIME, PARAM_INPUTS, UNCHECKABLE_NOTES

# The reason of every op after the first unmapped one, which runs on the CPU whatever its support.
FOLLOWS_UNMAPPED = "follows an unmapped op"
# What the compiler puts in place of the ops it maps: a model holding it is compiled already.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

EIGHT_BIT = ("INT8", "UINT8")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
# Constant index/shape/bias parameters (conv bias, reshape shape, mean axes, pad paddings, ...)
# are int32 in every quantized model the converter writes; the compiler takes them as they are.
PARAM_TYPES = ("INT32", "INT64")


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
    if len(t.shape) > 3 and dims_above_one(t.shape[:-3]):
        if t.shape[0] > 1:
            return f"batch size {t.shape[0]} > 1 in '{t.name}' {list(t.shape)}: only the 3 innermost dimensions may be > 1"
        return f"rank: '{t.name}' {list(t.shape)} has a dimension > 1 outside the 3 innermost"
    return None


def _own_reason(op: OpView, runtime: int) -> Optional[str]:
    """Why ``op`` itself cannot be mapped on ``runtime``, or None; earlier ops do not count."""
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
    fb = schema()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise BundleError("not a TFLite model (no 'TFL3' identifier): pass the .tflite file contents")
    try:
        model_obj = fb.ModelT.InitFromPackedBuf(model, 0)
    except Exception as e:  # a damaged flatbuffer raises whatever the generated reader hits
        raise BundleError(f"cannot parse the TFLite model ({type(e).__name__}: {e}); re-export it") from e
    if not model_obj.subgraphs:
        raise BundleError("the TFLite model has no subgraph; re-export it")
    graph = model_obj.subgraphs[0]
    tensors = tensor_infos(model_obj, model, graph, enum_names(fb.TensorType))
    op_names = enum_names(fb.BuiltinOperator)
    warnings: List[str] = []

    ops: List[Dict[str, Any]] = []
    first_unmapped: Optional[int] = None
    for i, op in enumerate(graph.operators or []):
        view = OpView(
            op_name(model_obj.operatorCodes[op.opcodeIndex], op_names),
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
