"""The graph of a .tflite model as the Edge TPU checks see it: tensors and operators, resolved.

Reads the flatbuffer with the schema that ``ai-edge-litert`` ships, never with TensorFlow, so the
Edge TPU report runs anywhere the base install does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgesight.edge.errors import MissingDependencyError

# Tensor types whose constant data the checks read (axes, paddings, strides, zero padding).
NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32}


def schema():
    """The generated TFLite flatbuffer schema module.

    Raises:
        MissingDependencyError: ``ai-edge-litert`` is not installed.
    """
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:
        raise MissingDependencyError(
            f"reading a .tflite model needs the Python package 'ai-edge-litert' ({e}): pip install ai-edge-litert"
        ) from e
    return schema_py_generated


def enum_names(enum_class) -> Dict[int, str]:
    """Value -> name of a generated flatbuffer enum class."""
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


def tensor_infos(model_obj, model_bytes: bytes, graph, type_names: Dict[int, str]) -> List[TensorInfo]:
    """Every tensor of ``graph`` with its type, shape, constant data and quantisation."""
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


def op_name(code, op_names: Dict[int, str]) -> str:
    """The builtin operator name of an operator code, or ``CUSTOM:<name>`` for a custom op."""
    # Builtin codes above 127 live only in builtinCode; older files fill only the deprecated byte.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode.decode("utf-8", "replace") if isinstance(code.customCode, bytes) else str(code.customCode)
        return f"CUSTOM:{custom}"
    return name
