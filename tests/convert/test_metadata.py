"""Standard TFLite metadata: our writer and reader agree, the model still runs unchanged, and
MediaPipe Tasks reads the labels and preprocessing from it."""

from __future__ import annotations

import io
import zipfile
from typing import Dict, List

import numpy as np
import pytest

from edgesight.convert.metadata import embed_metadata
from edgesight.edge.errors import BundleError
from edgesight.edge.model.metadata import ModelMetadata, read_labels, read_metadata

LABELS = ["cat", "dog", "fox"]
INFO = dict(
    name="dominant-colour",
    description="Says which colour channel dominates a 16x16 image.",
    version="v3",
    author="edgesight tests",
    license="Apache-2.0",
)
SIZE = 16

# The converter warns that uint8 inputs lack quantized_input_stats; calibration provides them.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")


def _embed(model: bytes, labels=LABELS, mean=(0.0,), std=(1.0,), **info) -> bytes:
    return embed_metadata(model, labels=labels, input_mean=mean, input_std=std, **{**INFO, **info})


def _colour_model(channels: int):
    """Raw 0-255 pixels in, softmax over 3 classes out; the class is the dominant channel.

    Fixed weights (the conv passes each channel through, the dense layer scores class i by
    channel i) give different top-1 classes for different images, so MediaPipe and our
    interpreter can be compared on more than one answer.
    """
    keras = pytest.importorskip("keras")
    inp = keras.Input((SIZE, SIZE, channels), batch_size=1, name="image")
    x = keras.layers.Rescaling(1 / 255)(inp)
    conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")
    dense = keras.layers.Dense(len(LABELS), activation="softmax")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(conv(x))))
    kernel = np.zeros((3, 3, channels, channels), np.float32)
    kernel[1, 1] = np.eye(channels)
    conv.set_weights([kernel, np.zeros(channels, np.float32)])
    dense.set_weights(
        [10 * np.eye(channels, len(LABELS), dtype=np.float32), np.zeros(len(LABELS), np.float32)]
    )
    return model


def _convert(model, int8: bool) -> bytes:
    tf = pytest.importorskip("tensorflow")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = (1,) + tuple(model.inputs[0].shape[1:])
        rng = np.random.default_rng(0)

        def representative():
            # Random pixels with a random brightness per channel, so calibration sees both
            # dominant and faint channels.
            for _ in range(32):
                yield [
                    (rng.integers(0, 256, shape) * rng.uniform(0, 1, (1, 1, 1, shape[-1]))).astype(np.float32)
                ]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        # MediaPipe refuses int8 output tensors; uint8 is what it accepts.
        converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def plain() -> Dict[str, bytes]:
    """The converted models before any metadata: int8 (uint8 I/O), float32, grayscale float32."""
    rgb = _colour_model(3)
    return {
        "int8": _convert(rgb, int8=True),
        "float32": _convert(rgb, int8=False),
        "gray": _convert(_colour_model(1), False),
    }


@pytest.fixture(scope="module")
def embedded(plain) -> Dict[str, bytes]:
    return {kind: _embed(model) for kind, model in plain.items()}


def _images() -> List[np.ndarray]:
    """Noisy 16x16 RGB images, two per dominant channel (red, green, blue, red, ...)."""
    rng = np.random.default_rng(7)
    images = []
    for i in range(6):
        img = rng.integers(0, 60, (SIZE, SIZE, 3))
        img[..., i % 3] += 150
        images.append(img.astype(np.uint8))
    return images


def _run(model: bytes, image: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"])[0]
    scale, zero_point = out["quantization"]
    return (raw.astype(np.float32) - zero_point) * scale if scale else raw


def _tflite_metadata_buffer(model: bytes) -> bytes:
    from ai_edge_litert import schema_py_generated as tfl

    root = tfl.Model.GetRootAs(model, 0)
    entries = [root.Metadata(i) for i in range(root.MetadataLength())]
    found = [m.Buffer() for m in entries if m.Name() == b"TFLITE_METADATA"]
    assert len(found) == 1
    return root.Buffers(found[0]).DataAsNumpy().tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_reader_round_trips_every_field(embedded, kind):
    expected = ModelMetadata(
        labels=tuple(LABELS), input_mean=(0.0,), input_std=(1.0,), color_space="RGB", output_names=("probability",), **INFO
    )
    assert read_metadata(embedded[kind]) == expected
    assert read_labels(embedded[kind]) == tuple(LABELS)


@pytest.mark.slow
def test_per_channel_normalisation_and_grayscale(plain, embedded):
    model = _embed(plain["float32"], mean=[127.5, 127.0, 126.5], std=[127.5])
    meta = read_metadata(model)
    assert (meta.input_mean, meta.input_std) == ((127.5, 127.0, 126.5), (127.5,))
    assert read_metadata(embedded["gray"]).color_space == "GRAYSCALE"


@pytest.mark.slow
def test_model_without_metadata_reads_as_none(plain):
    assert read_metadata(plain["int8"]) is None
    assert read_labels(plain["int8"]) is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_metadata_decodes_with_the_reference_schema(embedded, kind):
    # MediaPipe's generated classes are an independent check of our field slots and enum values.
    fb = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    buf = _tflite_metadata_buffer(embedded[kind])
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)
    meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAs(buf, 0))
    assert (meta.name, meta.description, meta.version, meta.author, meta.license) == tuple(
        INFO[k].encode() for k in ("name", "description", "version", "author", "license")
    )
    assert meta.minParserVersion == b"1.0.0"
    (subgraph,) = meta.subgraphMetadata
    (image,), (scores,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata

    assert image.name == b"image"
    assert image.content.contentPropertiesType == fb.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == fb.ColorSpaceType.RGB
    (unit,) = image.processUnits
    assert unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    # uint8 input holds 0..255; float input with mean 0, std 1 holds (0 - 0) / 1 .. (255 - 0) / 1.
    assert list(image.stats.min) == [0.0] and list(image.stats.max) == [255.0]

    assert scores.name == b"probability"
    assert scores.content.contentPropertiesType == fb.ContentProperties.FeatureProperties
    assert list(scores.stats.min) == [0.0] and list(scores.stats.max) == [1.0]
    (labels_file,) = scores.associatedFiles
    assert labels_file.name == b"labels.txt"
    assert labels_file.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS


@pytest.mark.slow
def test_labels_travel_as_an_uncompressed_zip(embedded):
    with zipfile.ZipFile(io.BytesIO(embedded["int8"])) as zf:
        (info,) = zf.infolist()
        assert info.filename == "labels.txt" and info.compress_type == zipfile.ZIP_STORED
        assert zf.read(info) == b"cat\ndog\nfox\n"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_model_runs_unchanged(plain, embedded, kind):
    for image in _images():
        np.testing.assert_array_equal(_run(embedded[kind], image), _run(plain[kind], image))


@pytest.mark.slow
def test_reembedding_replaces_the_metadata(plain, embedded):
    from ai_edge_litert import schema_py_generated as tfl

    first = embedded["int8"]
    second = _embed(first, labels=["ant", "bee", "cow"], version="v4")
    meta = read_metadata(second)
    assert meta.labels == ("ant", "bee", "cow") and meta.version == "v4"
    for model in (first, second):
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            assert zf.namelist() == ["labels.txt"]
    before, after = tfl.Model.GetRootAs(first, 0), tfl.Model.GetRootAs(second, 0)
    assert (
        after.BuffersLength()
        == before.BuffersLength()
        == tfl.Model.GetRootAs(plain["int8"], 0).BuffersLength() + 1
    )
    assert after.MetadataLength() == before.MetadataLength()
    # Same inputs, same bytes: embedding is idempotent.
    assert _embed(second) == first


@pytest.mark.slow
def test_label_count_mismatch_is_refused(plain):
    with pytest.raises(BundleError, match="2 labels for a model with 3 output scores; pass exactly 3 labels"):
        _embed(plain["int8"], labels=["cat", "dog"])
    with pytest.raises(BundleError, match="line break"):
        _embed(plain["int8"], labels=["cat", "dog\nfox", "owl"])


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not a model", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))],
)
def test_non_model_input_is_refused(data):
    with pytest.raises(BundleError, match="^model: not a TFLite model"):
        read_metadata(data)
    with pytest.raises(BundleError, match="^model: not a TFLite model"):
        embed_metadata(data, labels=LABELS, input_mean=[0], input_std=[1], **INFO)


@pytest.mark.slow
def test_truncated_model_is_refused(embedded):
    model = embedded["int8"]
    with pytest.raises(BundleError, match="^cut.tflite: not a TFLite model or its metadata is corrupt"):
        read_metadata(model[:100], source="cut.tflite")
    # The flatbuffer intact but the zip's end record cut off: the labels are what is missing.
    with pytest.raises(BundleError, match="^cut.tflite: cannot read the 'labels.txt'"):
        read_metadata(model[:-10], source="cut.tflite")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_mediapipe_image_classifier_reads_our_metadata(embedded, kind):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=embedded[kind]))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, image in enumerate(_images()):
            # Exactly the model's input size, so MediaPipe's resize leaves the pixels alone.
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = result.classifications[0].categories
            assert {c.category_name for c in categories} <= set(LABELS)
            ours = _run(embedded[kind], image)
            assert categories[0].index == int(np.argmax(ours)) == i % 3
            assert categories[0].category_name == LABELS[i % 3]
            for c in categories:
                assert c.score == pytest.approx(float(ours[c.index]), abs=1e-6)
