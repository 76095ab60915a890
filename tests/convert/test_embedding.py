"""``convert`` adds the embedding output (on by default): both outputs described in model.json
and found by name, the float-vs-int8 agreement in the report, the reference embeddings, MediaPipe
still reading the scores and labels, and ``--no-embedding``."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgesight.convert.config import ConvertConfig
from edgesight.convert.convert import convert_source
from edgesight.edge.classifier import Classifier
from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.training.data import Split

pytestmark = pytest.mark.slow


def test_bundle_describes_both_outputs_and_the_reference(color_bundle, trained_run):
    info = json.loads((color_bundle / "model.json").read_text())
    scores, emb = info["outputs"]["scores"], info["outputs"]["embedding"]
    clf = TFLiteClassifier(color_bundle / "model.tflite", outputs=info["outputs"])
    names = [d["name"] for d in clf._interp.get_output_details()]
    # scores first (MediaPipe's first head), the embedding second, whatever order the converter chose
    assert (scores["position"], emb["position"]) == (0, 1) and names == [scores["name"], emb["name"]]
    assert scores["size"] == 3 and scores["shape"] == [1, 3]
    import keras

    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    width = int(model.get_layer("pool").output.shape[-1])
    assert emb["size"] == width and emb["shape"] == [1, width] and emb["layer"] == "pool" and emb["dtype"] == "uint8"
    assert info["quantization"]["embedding"] == {k: emb[k] for k in ("name", "shape", "dtype", "scale", "zero_point")}
    ref = np.load(color_bundle / info["enrolment"]["reference"], allow_pickle=False)
    assert ref.dtype.names == ("label", "embedding") and ref["embedding"].shape[1] == width
    assert sorted(set(ref["label"].tolist())) == [0, 1, 2]
    report = json.loads((color_bundle / "conversion_report.json").read_text())["embedding"]
    assert report["num_samples"] == len(Split.load(trained_run / "split.json").test) and report["size"] == width
    assert 0.98 <= report["cosine_min"] <= report["cosine_mean"] <= 1.0


def test_classifier_embed_matches_the_keras_features(color_bundle, trained_run):
    import keras

    from edgesight.edge.model.preprocess import load_for_model
    from edgesight.edge.model.spec import read_model_info

    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    features = keras.Model(model.inputs, model.get_layer("pool").output)
    spec = read_model_info(color_bundle).preprocess
    clf = Classifier(color_bundle)
    for s in Split.load(trained_run / "split.json").test[:4]:
        want = features.predict(load_for_model(Path(s.path), spec)[None].astype(np.float32), verbose=0)[0]
        got = clf.embed(s.path)
        assert float(got @ (want / np.linalg.norm(want))) > 0.98


def test_mediapipe_reads_the_scores_head_and_its_labels(color_bundle, trained_run):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    from edgesight.edge.model.preprocess import load_for_model
    from edgesight.edge.model.spec import read_model_info

    info = read_model_info(color_bundle)
    ours = Classifier(color_bundle)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(color_bundle / "model.tflite")), max_results=3)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for s in Split.load(trained_run / "split.json").test:
            px = load_for_model(Path(s.path), info.preprocess)
            heads = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(px))).classifications
            assert [h.head_name for h in heads] == ["probability", "embedding"]
            top = heads[0].categories[0]
            assert top.category_name == info.labels[top.index] and top.index == int(ours.model.predict(px).argmax())


def test_no_embedding_gives_one_output(trained_run, tmp_path):
    out = tmp_path / "plain"
    convert_source(trained_run, out, ConvertConfig.int8(num_calib=20, embedding=False), progress=False)
    info = json.loads((out / "model.json").read_text())
    assert "outputs" not in info and "enrolment" not in info and not (out / "reference_embeddings.npy").exists()
    clf = TFLiteClassifier(out / "model.tflite")
    assert clf.embedding_tensor is None
    assert "embedding" not in json.loads((out / "conversion_report.json").read_text())
