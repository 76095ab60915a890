import json

import pytest

from edgesight.edge.errors import BundleError
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, read_labels, read_model_info, resolve_labels, write_model_info


def test_model_info_round_trip(tmp_path):
    info = ModelInfo(labels=("a", "b"), preprocess=PreprocessSpec(32, 48, "grayscale", "crop"), backbone="cnn_small", extra={"quantization": {"scale": 1.0}})
    write_model_info(tmp_path, info)
    d = json.loads((tmp_path / "model.json").read_text())
    assert d["preprocess"]["channels"] == 1 and d["num_classes"] == 2 and d["quantization"] == {"scale": 1.0}
    assert (tmp_path / "labels.txt").read_text() == "a\nb\n"
    back = read_model_info(tmp_path)
    assert back == info


def test_labels_file_must_match_model_json(tmp_path):
    write_model_info(tmp_path, ModelInfo(labels=("a", "b", "c"), preprocess=PreprocessSpec(16, 16)))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(BundleError, match="labels.txt: 2 labels do not match the 3"):
        read_model_info(tmp_path)


def test_bad_model_json(tmp_path):
    with pytest.raises(BundleError, match="model.json: not found"):
        read_model_info(tmp_path)
    (tmp_path / "model.json").write_text("{nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_model_info(tmp_path)
    (tmp_path / "model.json").write_text('{"labels": ["a", "b"]}')
    with pytest.raises(BundleError, match="missing or invalid field"):
        read_model_info(tmp_path)


def test_invalid_spec_values():
    with pytest.raises(BundleError, match="unknown resize 'zoom'"):
        PreprocessSpec(16, 16, resize="zoom")
    with pytest.raises(BundleError, match="too small"):
        PreprocessSpec(4, 16)


def test_read_labels_errors(tmp_path):
    (tmp_path / "one.txt").write_text("only\n")
    with pytest.raises(BundleError, match="one.txt: found 1 label"):
        read_labels(tmp_path / "one.txt")
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(BundleError, match=r"duplicate labels \['a'\]"):
        read_labels(tmp_path / "dup.txt")
    with pytest.raises(BundleError, match="labels.txt: 2 labels but the model has 3 outputs"):
        resolve_labels(["a", "b"], 3, "labels.txt")
    assert resolve_labels(None, 2, "x") == ("class_0", "class_1")
