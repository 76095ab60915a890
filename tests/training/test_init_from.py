"""``edgesight train --init-from RUN``: a retrain that starts from an earlier run's weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from tests.conftest import run_cli, write_color_dataset

pytestmark = pytest.mark.slow

# trained_run's options (tests/conftest.py), so a fresh run compares with a continued one
SAME = ["--batch-size", 8, "--lr", 5e-3, "--augment", "light", "--early-stopping", 0, "--seed", 1, "--no-probe"]


def test_same_classes_continue_where_the_run_ended(trained_run, color_data, tmp_path, capsys):
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "fresh", "--model", "cnn_small", "--img-size", 16,
                              "--alpha", 0.5, "--epochs", 1, *SAME], capsys)
    assert code == 0, err
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "cont", "--init-from", trained_run, *SAME], capsys)
    assert code == 0, err
    assert f"continuing from {trained_run}: up to 8 epochs" in out
    assert f"starting from the weights of {trained_run} (3 classes kept)" in out
    fresh, cont = (json.loads((tmp_path / run / "history.json").read_text())["loss"] for run in ("fresh", "cont"))
    assert cont[0] < 0.8 * fresh[0]
    cfg = yaml.safe_load((tmp_path / "cont" / "config.yaml").read_text())
    # backbone, size and width come from the earlier run; the short retrain is recorded
    assert (cfg["model"], cfg["img_height"], cfg["alpha"], cfg["epochs"], cfg["init_from"]) == ("cnn_small", 16, 0.5, 8, str(trained_run))
    metrics = json.loads((tmp_path / "cont" / "metrics.json").read_text())
    assert metrics["init_from"] == {"run": str(trained_run.resolve()), "kept": ["blue", "green", "red"], "new": [], "dropped": []}
    assert json.loads((tmp_path / "cont" / "model.json").read_text())["source"]["init_from"] == str(trained_run.resolve())


def test_a_continued_run_chooses_its_augmentation_for_the_data(trained_run, color_data, tmp_path, capsys):
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "cont", "--init-from", trained_run, "--epochs", 1,
                              "--no-probe"], capsys)
    assert code == 0, err
    assert "augmentation: standard (auto: continued on " in out and "trained from scratch" not in out
    assert yaml.safe_load((tmp_path / "cont" / "config.yaml").read_text())["augment"] == "standard"


def test_a_new_class_keeps_the_rows_of_the_known_ones(trained_run, color_data, tmp_path, capsys):
    from edgesight.training.backbones import build_classifier, get_backbone
    from edgesight.training.evaluate import load_keras_model
    from edgesight.training.initfrom import load_weights, open_run

    old = load_keras_model(trained_run / "model.keras")
    old_kernel, old_bias = old.get_layer("predictions").get_weights()
    start = open_run(trained_run)
    for classes in (("blue", "green", "red", "yellow"), ("yellow", "red", "blue", "green")):
        core, _ = build_classifier(get_backbone("cnn_small"), (16, 16, 3), len(classes), "none", 0.5)
        fresh_kernel = core.get_layer("predictions").get_weights()[0].copy()
        mapping = load_weights(core, start, classes)
        assert mapping == {"kept": [c for c in classes if c != "yellow"], "new": ["yellow"], "dropped": []}
        kernel, bias = core.get_layer("predictions").get_weights()
        for i, name in enumerate(classes):
            if name == "yellow":
                np.testing.assert_array_equal(kernel[:, i], fresh_kernel[:, i])
                assert bias[i] == 0.0
            else:
                j = ("blue", "green", "red").index(name)
                np.testing.assert_array_equal(kernel[:, i], old_kernel[:, j])
                assert bias[i] == old_bias[j]
        for mine, theirs in zip(core.get_layer("cnn_small").get_weights(), old.get_layer("cnn_small").get_weights()):
            np.testing.assert_array_equal(mine, theirs)

    data = tmp_path / "data"
    shutil.copytree(color_data, data)
    write_color_dataset(data, per_class=20, classes={"yellow": (40, 220, 220)})
    code, out, err = run_cli(["train", data, "--out", tmp_path / "more", "--init-from", trained_run, "--epochs", 1, *SAME], capsys)
    assert code == 0, err
    assert "new: yellow" in out and "continuing from" not in out  # --epochs given: nothing to choose
    metrics = json.loads((tmp_path / "more" / "metrics.json").read_text())
    assert metrics["init_from"]["new"] == ["yellow"] and metrics["labels"] == ["blue", "green", "red", "yellow"]


def test_a_run_of_another_size_or_backbone_is_refused_with_the_fix(trained_run, color_data, tmp_path, capsys):
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "x", "--init-from", trained_run, "--img-size", 24], capsys)
    assert code == 1
    assert err.strip() == (f"error: --init-from {trained_run}: that run's input is 16x16 rgb, not 24x24 rgb; give --img-size 16 "
                           "--color rgb (or leave them out) or train without --init-from")
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "x", "--init-from", trained_run, "--model", "mobilenet_v2"], capsys)
    assert code == 1 and "that run's backbone is cnn_small, not mobilenet_v2; give --model cnn_small" in err
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "x", "--init-from", tmp_path], capsys)
    assert code == 1 and "not a run folder with a model.keras" in err
    assert not (tmp_path / "x").exists()


def test_a_max_pooled_model_converts_with_its_pooled_embedding_and_passes_its_pooling_on(color_data, tmp_path, capsys):
    import cv2

    from edgesight.edge.classifier import Classifier
    from edgesight.training.tf import import_keras

    keras = import_keras()
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "max", "--model", "cnn_small", "--img-size", 16, "--alpha", 0.5,
                              "--epochs", 2, "--pooling", "max", *SAME], capsys)
    assert code == 0, err
    model = keras.models.load_model(tmp_path / "max" / "model.keras", compile=False)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert yaml.safe_load((tmp_path / "max" / "config.yaml").read_text())["pooling"] == "max"
    # a continued run keeps the earlier run's pooling unless told otherwise
    code, out, err = run_cli(["train", color_data, "--out", tmp_path / "cont", "--init-from", tmp_path / "max", "--epochs", 1, *SAME], capsys)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "cont" / "config.yaml").read_text())["pooling"] == "max"
    assert isinstance(keras.models.load_model(tmp_path / "cont" / "model.keras", compile=False).get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    # the int8 bundle's embedding output is the max-pooled feature vector
    code, out, err = run_cli(["convert", tmp_path / "max", "--out", tmp_path / "bundle", "--eval", color_data], capsys)
    assert code == 0, err
    clf = Classifier(tmp_path / "bundle")
    features = keras.Model(model.input, model.get_layer("pool").output)
    images = sorted((color_data / "red").glob("*.png"))[:4] + sorted((color_data / "blue").glob("*.png"))[:4]
    for path in images:
        pixels = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (16, 16), interpolation=cv2.INTER_LINEAR)
        want = np.asarray(features(pixels[None].astype(np.float32)))[0]
        got = clf.embed(str(path))
        assert float(want @ got / (np.linalg.norm(want) * np.linalg.norm(got))) > 0.99
