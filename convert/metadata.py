"""Embed standard TFLite model metadata (labels, normalisation, colour space) into a .tflite.

This writes what TFLite Support's ``MetadataPopulator`` writes, so MediaPipe Tasks, the TFLite
Task Library and Android Studio read the model's labels and preprocessing: a ``ModelMetadata``
flatbuffer (``metadata_schema.fbs``, identifier ``M001``) in a model buffer referenced by a
``Metadata`` entry named ``TFLITE_METADATA``, and ``labels.txt`` in an uncompressed zip archive
appended to the model. Neither tflite-support (it pins protobuf<4, which TensorFlow 2.21 cannot
use) nor MediaPipe's writers (they need a native module the wheel lacks) are used: the metadata
is built with the low-level ``flatbuffers.Builder``, and the model is re-packed with the LiteRT
schema's object API.
"""

from __future__ import annotations

import io
import zipfile
from typing import Dict, Optional, Sequence, Tuple

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from edgesight.edge.errors import BundleError
from edgesight.edge.model.metadata import (
    FLATBUFFER_ERRORS,
    LABELS_FILE,
    METADATA_IDENTIFIER,
    METADATA_NAME,
    MODEL_IDENTIFIER,
)

# Every field and enum value written here exists since metadata schema 1.0.0; readers refuse
# metadata whose min_parser_version is newer than theirs, so claim no more than needed.
_MIN_PARSER_VERSION = "1.0.0"

# Each table's slot count (*_SLOTS) and field slots: declaration order in metadata_schema.fbs,
# where a union field takes two slots, its type byte first.
_ASSOCIATED_FILE_SLOTS = 5
_AF_NAME, _AF_DESCRIPTION, _AF_TYPE = 0, 1, 2
_IMAGE_PROPERTIES_SLOTS = 2
_IMAGE_COLOR_SPACE = 0
_FEATURE_PROPERTIES_SLOTS = 0
_CONTENT_SLOTS = 3
_CONTENT_TYPE, _CONTENT_PROPERTIES = 0, 1
_NORMALIZATION_SLOTS = 2
_NORM_MEAN, _NORM_STD = 0, 1
_PROCESS_UNIT_SLOTS = 2
_PU_TYPE, _PU_OPTIONS = 0, 1
_STATS_SLOTS = 2
_STATS_MAX, _STATS_MIN = 0, 1
_TENSOR_SLOTS = 7
_TM_NAME, _TM_DESCRIPTION, _TM_CONTENT, _TM_PROCESS_UNITS, _TM_STATS, _TM_ASSOCIATED_FILES = 0, 1, 3, 4, 5, 6
_SUBGRAPH_SLOTS = 10
_SG_INPUTS, _SG_OUTPUTS = 2, 3
_MODEL_METADATA_SLOTS = 8
_MM_NAME, _MM_DESCRIPTION, _MM_VERSION, _MM_SUBGRAPHS, _MM_AUTHOR, _MM_LICENSE = range(6)
_MM_MIN_PARSER_VERSION = 7

# Enum and union type values.
_TENSOR_AXIS_LABELS = 2
_COLOR_SPACE = {1: 2, 3: 1}  # channels -> ColorSpaceType (GRAYSCALE = 2, RGB = 1)
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2
_PROCESS_UNIT_NORMALIZATION = 1

_PIXEL_MIN, _PIXEL_MAX = 0.0, 255.0
_INPUT_TYPE_RANGE = {tfl.TensorType.UINT8: (0.0, 255.0), tfl.TensorType.INT8: (-128.0, 127.0)}
# A fixed timestamp makes embedding deterministic: same inputs, same bytes, same sha256.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def embed_metadata(
    model: bytes,
    *,
    labels: Sequence[str],
    input_mean: Sequence[float],
    input_std: Sequence[float],
    name: str,
    description: str,
    version: str,
    author: str = "edgesight",
    license: str = "",
    embedding: bool = False,
) -> bytes:
    """Return ``model`` with standard TFLite metadata and ``labels.txt`` embedded.

    Metadata already in the model (``TFLITE_METADATA`` and its appended zip) is replaced, so
    embedding twice gives the same bytes as embedding once. The input is described as an image
    whose colour space follows the input tensor's channel count, normalised as
    ``(pixel - mean) / std``; the output as probabilities over ``labels``.

    Args:
        model: the .tflite file contents; subgraph 0 must take one NHWC image with 1 or 3 channels.
        labels: class names in output order, one per output score.
        input_mean: what the input tensor expects pixels normalised with, one value or one per
            channel: ``[0]`` and ``[1]`` for edgesight models, which rescale inside the model.
            MediaPipe applies it to float inputs only (and refuses float inputs without it).
        input_std: the matching standard deviation(s).
        name: model name shown by metadata readers.
        description: what the model classifies.
        version: model version string.
        author: model author.
        license: licence text or SPDX identifier; left out when empty.
        embedding: the model has a second output, the feature vector before the classifier
            head (``convert --embedding``): it is described as a feature tensor named
            ``embedding``, without labels (MediaPipe needs one description per output).

    Returns:
        The new .tflite file contents.

    Raises:
        BundleError: ``model`` is not a TFLite model, its input is not a 1- or 3-channel image,
            the labels do not match the output size or contain line breaks, or the normalisation
            values do not fit the channel count.
    """
    if model[4:8] != MODEL_IDENTIFIER:
        raise BundleError(
            "model: not a TFLite model (no 'TFL3' file identifier); pass the converter's .tflite bytes"
        )
    try:
        tree = tfl.ModelT.InitFromPackedBuf(model, 0)
        subgraph = tree.subgraphs[0]
        image = subgraph.tensors[subgraph.inputs[0]]
        scores = subgraph.tensors[subgraph.outputs[0]]
        n_outputs = len(subgraph.outputs)
    except FLATBUFFER_ERRORS as e:
        raise BundleError(
            f"model: not a TFLite model or corrupt ({type(e).__name__}: {e}); convert it again"
        ) from e
    channels = _channels(image)
    mean, std = _normalization(input_mean, input_std, channels)
    labels = _check_labels(labels, int(scores.shape[-1]))
    if n_outputs != 1 + int(embedding):
        raise BundleError(f"model: {n_outputs} outputs, expected {1 + int(embedding)} (scores{', embedding' if embedding else ''}); "
                          "convert the model again")
    metadata = _model_metadata(
        labels=labels,
        mean=mean,
        std=std,
        stats=_input_stats(image.type, mean, std),
        color_space=_COLOR_SPACE[channels],
        strings={
            _MM_NAME: name,
            _MM_DESCRIPTION: description,
            _MM_VERSION: version,
            _MM_AUTHOR: author,
            _MM_LICENSE: license,
            _MM_MIN_PARSER_VERSION: _MIN_PARSER_VERSION,
        },
        embedding=embedding,
    )
    packed = _attach_metadata(tree, metadata, size_hint=len(model))
    return _append_zip(packed, {LABELS_FILE: "".join(f"{label}\n" for label in labels).encode("utf-8")})


def _channels(image) -> int:
    shape = [int(d) for d in image.shape] if image.shape is not None else []
    if len(shape) != 4 or shape[-1] not in _COLOR_SPACE:
        raise BundleError(
            f"model: input shape {shape} is not an NHWC image with 1 or 3 channels; "
            "metadata can only describe image classifiers"
        )
    return shape[-1]


def _normalization(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> Tuple[np.ndarray, np.ndarray]:
    mean_a = np.asarray(mean, np.float32).reshape(-1)
    std_a = np.asarray(std, np.float32).reshape(-1)
    for what, values in (("input_mean", mean_a), ("input_std", std_a)):
        if values.size not in (1, channels):
            raise BundleError(
                f"{what} has {values.size} values; give 1 or {channels} (one per input channel)"
            )
    if np.any(std_a == 0):
        raise BundleError("input_std contains 0; give the non-zero scale used in training")
    return mean_a, std_a


def _input_stats(
    tensor_type: int, mean: np.ndarray, std: np.ndarray
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(min, max) of the values the input tensor holds, as TFLite Support's writer records them.

    A float input receives normalised pixels, ``(0 - mean) / std .. (255 - mean) / std`` per
    channel; an integer input receives raw pixels (normalisation is then inside the model), so
    its stats are its type's range.
    """
    if tensor_type == tfl.TensorType.FLOAT32:
        return (_PIXEL_MIN - mean) / std, (_PIXEL_MAX - mean) / std
    if tensor_type in _INPUT_TYPE_RANGE:
        low, high = _INPUT_TYPE_RANGE[tensor_type]
        return np.array([low], np.float32), np.array([high], np.float32)
    return None


def _check_labels(labels: Sequence[str], n_outputs: int) -> tuple:
    labels = tuple(str(label) for label in labels)
    if len(labels) != n_outputs:
        raise BundleError(
            f"{len(labels)} labels for a model with {n_outputs} output scores; "
            f"pass exactly {n_outputs} labels in output order"
        )
    for i, label in enumerate(labels):
        # labels.txt holds one label per line, and readers drop a trailing empty line.
        if not label or "\n" in label or "\r" in label:
            raise BundleError(f"label {i} ({label!r}) is empty or contains a line break; give one-line names")
    return labels


def _model_metadata(*, labels, mean, std, stats, color_space, strings, embedding=False) -> bytes:
    """The ModelMetadata flatbuffer (identifier M001) for one image input and one score output
    (and, with ``embedding``, a second output: the feature vector)."""
    b = flatbuffers.Builder(1024)

    def string(text: str) -> int:
        return b.CreateString(text)

    def floats(values) -> int:
        return b.CreateNumpyVector(np.asarray(values, np.float32).reshape(-1))

    def table_vector(offsets) -> int:
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def table(
        n_slots: int, refs: Optional[Dict[int, int]] = None, small: Optional[Dict[int, int]] = None
    ) -> int:
        # Children (strings, vectors, tables) must be finished before their parent starts.
        b.StartObject(n_slots)
        for slot, off in (refs or {}).items():
            b.PrependUOffsetTRelativeSlot(slot, off, 0)
        # Enums (byte) and union types (ubyte) are one-byte fields; 0 is their default.
        for slot, value in (small or {}).items():
            b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    labels_file = table(
        _ASSOCIATED_FILE_SLOTS,
        refs={
            _AF_NAME: string(LABELS_FILE),
            _AF_DESCRIPTION: string("Labels for categories that the model can recognize."),
        },
        small={_AF_TYPE: _TENSOR_AXIS_LABELS},
    )
    normalization = table(_NORMALIZATION_SLOTS, refs={_NORM_MEAN: floats(mean), _NORM_STD: floats(std)})
    process_unit = table(
        _PROCESS_UNIT_SLOTS, refs={_PU_OPTIONS: normalization}, small={_PU_TYPE: _PROCESS_UNIT_NORMALIZATION}
    )
    image_properties = table(_IMAGE_PROPERTIES_SLOTS, small={_IMAGE_COLOR_SPACE: color_space})
    input_content = table(
        _CONTENT_SLOTS, refs={_CONTENT_PROPERTIES: image_properties}, small={_CONTENT_TYPE: _CONTENT_IMAGE}
    )
    input_refs = {
        _TM_NAME: string("image"),
        _TM_DESCRIPTION: string("Input image to be classified."),
        _TM_CONTENT: input_content,
        _TM_PROCESS_UNITS: table_vector([process_unit]),
    }
    if stats is not None:
        input_refs[_TM_STATS] = table(
            _STATS_SLOTS, refs={_STATS_MAX: floats(stats[1]), _STATS_MIN: floats(stats[0])}
        )
    input_tensor = table(_TENSOR_SLOTS, refs=input_refs)

    feature_properties = table(_FEATURE_PROPERTIES_SLOTS)
    output_content = table(
        _CONTENT_SLOTS,
        refs={_CONTENT_PROPERTIES: feature_properties},
        small={_CONTENT_TYPE: _CONTENT_FEATURE},
    )
    output_tensor = table(
        _TENSOR_SLOTS,
        refs={
            _TM_NAME: string("probability"),
            _TM_DESCRIPTION: string(f"Probabilities of the {len(labels)} labels respectively."),
            _TM_CONTENT: output_content,
            _TM_STATS: table(_STATS_SLOTS, refs={_STATS_MAX: floats([1.0]), _STATS_MIN: floats([0.0])}),
            _TM_ASSOCIATED_FILES: table_vector([labels_file]),
        },
    )
    outputs = [output_tensor]
    if embedding:
        outputs.append(table(
            _TENSOR_SLOTS,
            refs={
                _TM_NAME: string("embedding"),
                _TM_DESCRIPTION: string("Feature vector before the classifier head (L2-normalise it to compare images)."),
                _TM_CONTENT: table(_CONTENT_SLOTS, refs={_CONTENT_PROPERTIES: table(_FEATURE_PROPERTIES_SLOTS)},
                                   small={_CONTENT_TYPE: _CONTENT_FEATURE}),
            },
        ))
    subgraph = table(
        _SUBGRAPH_SLOTS,
        refs={_SG_INPUTS: table_vector([input_tensor]), _SG_OUTPUTS: table_vector(outputs)},
    )
    root_refs = {slot: string(text) for slot, text in strings.items() if text}
    root_refs[_MM_SUBGRAPHS] = table_vector([subgraph])
    b.Finish(table(_MODEL_METADATA_SLOTS, refs=root_refs), file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _attach_metadata(tree, metadata: bytes, size_hint: int) -> bytes:
    """Pack ``tree`` with ``metadata`` in its TFLITE_METADATA buffer (replacing any old one).

    Packing drops whatever followed the flatbuffer, so an old appended zip goes with it.
    """
    for buffer in tree.buffers or []:
        if buffer.offset > 1:
            raise BundleError(
                "model: its weights are stored after the flatbuffer (buffer offsets), which re-packing "
                "would invalidate; convert it without external buffers"
            )
    # A NumPy array, like the weights unpacked from the model: the generated Pack copies an array
    # in one slice but prepends bytes or a list one byte per Python call.
    buffer = tfl.BufferT(data=np.frombuffer(metadata, np.uint8))
    tree.buffers = tree.buffers or []
    tree.metadata = tree.metadata or []
    # Unpacked names are bytes.
    existing = [entry for entry in tree.metadata if entry.name == METADATA_NAME.encode()]
    if existing:
        tree.buffers[existing[0].buffer] = buffer
    else:
        tree.buffers.append(buffer)
        tree.metadata.append(tfl.MetadataT(name=METADATA_NAME, buffer=len(tree.buffers) - 1))
    # Sized up front: the builder otherwise doubles and copies its whole array as it grows.
    builder = flatbuffers.Builder(size_hint + len(metadata) + 65536)
    builder.Finish(tree.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    return bytes(builder.Output())


def _append_zip(model: bytes, files: Dict[str, bytes]) -> bytes:
    """``model`` followed by a stored (uncompressed) zip of ``files``.

    Entry offsets are absolute within the result, as when TFLite Support appends to a .tflite
    in zip "a" mode; zip readers, MediaPipe's included, locate the archive from its end record.
    """
    out = io.BytesIO()
    out.write(model)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for file_name, data in files.items():
            zf.writestr(zipfile.ZipInfo(file_name, date_time=_ZIP_DATE), data)
    return out.getvalue()
