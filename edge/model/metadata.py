"""Read standard TFLite model metadata (labels, normalisation, colour space) without TensorFlow.

The metadata is the ``ModelMetadata`` flatbuffer of the TFLite metadata schema
(``metadata_schema.fbs``, file identifier ``M001``) that MediaPipe Tasks, TFLite Support and
Android read: it sits in a model buffer referenced by a ``Metadata`` entry named
``TFLITE_METADATA``, and its associated files (``labels.txt``) are in a zip archive appended to
the .tflite. This module reads the few fields the runtime needs with the ``flatbuffers`` Table
API, so a Raspberry Pi needs neither tflite-support nor the LiteRT schema module.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from ..errors import BundleError

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"

# Field slots (declaration order in the .fbs; a union takes two: its type, then its value) and
# enum values, from schema.fbs (TFLite model) and metadata_schema.fbs (metadata 1.5.0).
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA = 0
_MM_NAME, _MM_DESCRIPTION, _MM_VERSION, _MM_SUBGRAPHS, _MM_AUTHOR, _MM_LICENSE = range(6)
_SG_INPUTS, _SG_OUTPUTS = 2, 3
_TM_NAME, _TM_CONTENT, _TM_PROCESS_UNITS, _TM_ASSOCIATED_FILES = 0, 3, 4, 6
_CONTENT_TYPE, _CONTENT_PROPERTIES = 0, 1
_IMAGE_COLOR_SPACE = 0
_PU_TYPE, _PU_OPTIONS = 0, 1
_NORM_MEAN, _NORM_STD = 0, 1
_AF_NAME, _AF_TYPE = 0, 2
_CONTENT_IMAGE_PROPERTIES = 2
_PROCESS_UNIT_NORMALIZATION = 1
_TENSOR_AXIS_LABELS = 2
_COLOR_SPACES = ("UNKNOWN", "RGB", "GRAYSCALE")

# What a truncated or damaged flatbuffer raises inside flatbuffers, numpy and str.decode.
FLATBUFFER_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError)
# What a damaged zip archive raises inside zipfile (a missing member is a KeyError).
_ZIP_ERRORS = (KeyError, zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError)


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata fields an image classifier needs, from subgraph 0, input 0 and output 0.

    ``input_mean`` and ``input_std`` hold one value or one per channel (float32 in the file, so
    values that float32 cannot represent exactly come back rounded); they are empty when the
    input has no NormalizationOptions. ``color_space`` is ``"RGB"``, ``"GRAYSCALE"`` or
    ``"UNKNOWN"``; ``labels`` is empty when the output names no TENSOR_AXIS_LABELS file.
    ``output_names`` names every output in the model's output order (``probability`` and
    ``embedding`` for a model converted with an embedding output).
    """

    name: str
    description: str
    version: str
    author: str
    license: str
    labels: Tuple[str, ...]
    input_mean: Tuple[float, ...]
    input_std: Tuple[float, ...]
    color_space: str
    output_names: Tuple[str, ...] = ()


def read_metadata(model: bytes, *, source: str = "model") -> Optional[ModelMetadata]:
    """Read the standard TFLite metadata embedded in a .tflite model.

    Args:
        model: the .tflite file contents (with the appended zip of associated files, if any).
        source: what to call the model in error messages, e.g. its path.

    Returns:
        The metadata, or None when the model has no ``TFLITE_METADATA`` entry.

    Raises:
        BundleError: ``model`` is not a TFLite model, or its metadata or zip archive is corrupt.
    """
    model = bytes(model)
    if model[4:8] != MODEL_IDENTIFIER:
        raise BundleError(f"{source}: not a TFLite model (no 'TFL3' file identifier); pass a .tflite file")
    try:
        meta = _metadata_table(model)
        if meta is None:
            return None
        inputs, outputs = _subgraph_tensors(meta)
        mean, std = _normalization(inputs[0]) if inputs else ((), ())
        labels_file = _labels_file_name(outputs[0]) if outputs else None
        return ModelMetadata(
            name=_string(meta, _MM_NAME),
            description=_string(meta, _MM_DESCRIPTION),
            version=_string(meta, _MM_VERSION),
            author=_string(meta, _MM_AUTHOR),
            license=_string(meta, _MM_LICENSE),
            labels=_read_labels_file(model, labels_file, source) if labels_file else (),
            input_mean=mean,
            input_std=std,
            color_space=_color_space(inputs[0]) if inputs else "UNKNOWN",
            output_names=tuple(_string(t, _TM_NAME) for t in outputs),
        )
    except FLATBUFFER_ERRORS as e:
        raise BundleError(
            f"{source}: not a TFLite model or its metadata is corrupt ({type(e).__name__}: {e}); "
            "convert the model again"
        ) from e


def read_labels(model: bytes, *, source: str = "model") -> Optional[Tuple[str, ...]]:
    """The class labels embedded in a .tflite model's metadata.

    Args:
        model: the .tflite file contents.
        source: what to call the model in error messages.

    Returns:
        The labels in output order, or None when the model has no metadata (an empty tuple when
        it has metadata without a labels file).

    Raises:
        BundleError: as for :func:`read_metadata`.
    """
    meta = read_metadata(model, source=source)
    return None if meta is None else meta.labels


def _root(buf: bytes, pos: int = 0) -> Table:
    return Table(buf, pos + encode.Get(packer.uoffset, buf, pos))


def _field(t: Table, slot: int) -> int:
    return t.Offset(4 + 2 * slot)


def _string(t: Table, slot: int) -> str:
    off = _field(t, slot)
    return t.String(t.Pos + off).decode("utf-8") if off else ""


def _uint(t: Table, slot: int, flags) -> int:
    off = _field(t, slot)
    return t.Get(flags, t.Pos + off) if off else 0


def _table(t: Table, slot: int) -> Optional[Table]:
    off = _field(t, slot)
    return Table(t.Bytes, t.Indirect(t.Pos + off)) if off else None


def _tables(t: Table, slot: int) -> List[Table]:
    off = _field(t, slot)
    if not off:
        return []
    start, n = t.Vector(off), t.VectorLen(off)
    # A corrupt length would otherwise make this loop run for billions of entries.
    if start + 4 * n > len(t.Bytes):
        raise ValueError(f"vector of {n} tables runs past the end of the buffer")
    return [Table(t.Bytes, t.Indirect(start + 4 * i)) for i in range(n)]


def _floats(t: Table, slot: int) -> Tuple[float, ...]:
    off = _field(t, slot)
    return tuple(float(x) for x in t.GetVectorAsNumpy(number_types.Float32Flags, off)) if off else ()


def _metadata_table(model: bytes) -> Optional[Table]:
    """The ModelMetadata root table, read in place inside the model buffer, or None."""
    root = _root(model)
    for entry in _tables(root, _MODEL_METADATA):
        if _string(entry, _METADATA_NAME) != METADATA_NAME:
            continue
        buffers = _tables(root, _MODEL_BUFFERS)
        buffer = buffers[_uint(entry, _METADATA_BUFFER, number_types.Uint32Flags)]
        off = _field(buffer, _BUFFER_DATA)
        start = buffer.Vector(off) if off else 0
        if not off or model[start + 4 : start + 8] != METADATA_IDENTIFIER:
            raise ValueError(f"the {METADATA_NAME} buffer is not an 'M001' metadata flatbuffer")
        return _root(model, start)
    return None


def _subgraph_tensors(meta: Table) -> Tuple[List[Table], List[Table]]:
    subgraphs = _tables(meta, _MM_SUBGRAPHS)
    if not subgraphs:
        return [], []
    return _tables(subgraphs[0], _SG_INPUTS), _tables(subgraphs[0], _SG_OUTPUTS)


def _normalization(tensor: Table) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    for unit in _tables(tensor, _TM_PROCESS_UNITS):
        if _uint(unit, _PU_TYPE, number_types.Uint8Flags) == _PROCESS_UNIT_NORMALIZATION:
            options = _table(unit, _PU_OPTIONS)
            if options is not None:
                return _floats(options, _NORM_MEAN), _floats(options, _NORM_STD)
    return (), ()


def _color_space(tensor: Table) -> str:
    content = _table(tensor, _TM_CONTENT)
    if content is None or _uint(content, _CONTENT_TYPE, number_types.Uint8Flags) != _CONTENT_IMAGE_PROPERTIES:
        return "UNKNOWN"
    props = _table(content, _CONTENT_PROPERTIES)
    value = _uint(props, _IMAGE_COLOR_SPACE, number_types.Uint8Flags) if props is not None else 0
    return _COLOR_SPACES[value] if value < len(_COLOR_SPACES) else "UNKNOWN"


def _labels_file_name(tensor: Table) -> Optional[str]:
    # Several label files differ only by locale; like MediaPipe without a locale, take the first.
    for f in _tables(tensor, _TM_ASSOCIATED_FILES):
        if _uint(f, _AF_TYPE, number_types.Uint8Flags) == _TENSOR_AXIS_LABELS:
            return _string(f, _AF_NAME)
    return None


def _read_labels_file(model: bytes, name: str, source: str) -> Tuple[str, ...]:
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            text = zf.read(name).decode("utf-8")
    except _ZIP_ERRORS as e:
        raise BundleError(
            f"{source}: cannot read the '{name}' its metadata names from the zip archive appended to "
            f"the model ({type(e).__name__}: {e}); embed the metadata again"
        ) from e
    # One label per line; a final newline does not start another label (as MediaPipe reads it).
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(lines)
