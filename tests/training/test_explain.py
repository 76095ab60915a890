"""Grad-CAM on Keras classifiers, ``edgesight explain`` on a run folder, and ``errors.png``."""

import json

import cv2
import numpy as np
import pytest

from tests.conftest import COLORS_BGR, run_cli

pytestmark = pytest.mark.slow


def _keras():
    from edgesight.training.tf import import_keras

    return import_keras()


def _colour_classifier():
    """The shape ``edgesight train`` builds (pixels -> normalize -> backbone sub-model -> pool ->
    dropout -> softmax Dense), with a backbone of per-pixel colour detectors (1x1 convolutions):
    each pixel is evidence for its own colour only, so the right map is known exactly."""
    keras = _keras()
    layers = keras.layers
    inner = keras.Input((16, 16, 3))
    conv = layers.Conv2D(3, 1, activation="relu", name="colour")
    backbone = keras.Model(inner, conv(inner), name="detectors")
    inputs = keras.Input((16, 16, 3), name="image")
    x = backbone(layers.Rescaling(1 / 255.0, name="normalize")(inputs))
    x = layers.Dropout(0.2, name="dropout")(layers.GlobalAveragePooling2D(name="pool")(x))
    dense = layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, dense(x))
    # channel c (RGB order: red, green, blue) = its colour minus the mean of the others
    kernel = np.full((1, 1, 3, 3), -0.5, np.float32)
    kernel[0, 0, range(3), range(3)] = 1.0
    conv.set_weights([kernel, np.full(3, -0.1, np.float32)])
    dense.set_weights([np.eye(3, dtype=np.float32) * 20, np.zeros(3, np.float32)])
    return model


def _planted_rgb(colour="red"):
    img = np.full((16, 16, 3), 128, np.uint8)
    img[:8, 8:] = COLORS_BGR[colour]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_grad_cam_finds_the_planted_patch():
    from edgesight.training.explain import GradCam

    model = _colour_classifier()
    exs = GradCam(model)(np.stack([_planted_rgb("red"), _planted_rgb("blue")]).astype(np.float32))
    for ex, cls in zip(exs, (0, 2)):
        assert ex.predicted == ex.target == cls
        heat = ex.heatmap
        assert heat.shape == (16, 16) and heat.dtype == np.float32 and heat.min() == 0.0 and heat.max() == 1.0
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        assert y < 8 <= x
        # the grey elsewhere is no evidence for any colour
        outside = heat.copy()
        outside[:8, 8:] = 0
        assert not outside.any() and heat[:8, 8:].min() > 0.99
    # explaining a class that is absent: no evidence anywhere
    (absent,) = GradCam(model)(_planted_rgb("red")[None], [1])
    assert absent.target == 1 and absent.predicted == 0 and not absent.heatmap.any()


@pytest.mark.parametrize("channels, frozen", [(3, False), (1, True)])
def test_grad_cam_uses_the_backbone_output_of_every_backbone(channels, frozen):
    from edgesight.training.backbones import build_classifier, get_backbone, list_backbones
    from edgesight.training.explain import GradCam, feature_map_tensor

    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, channels)).astype(np.float32)
    for name in list_backbones():
        model, base = build_classifier(get_backbone(name), (64, 64, channels), 3, "none")
        base.trainable = not frozen  # transfer learning's first phase: gradients still reach the map
        fmap = feature_map_tensor(model)
        assert tuple(fmap.shape) == tuple(base.output.shape), name
        assert fmap.shape[1] >= 2, name
        for ex in GradCam(model)(x):
            assert ex.heatmap.shape == (64, 64) and ex.heatmap.dtype == np.float32, name
            assert 0.0 <= ex.heatmap.min() and ex.heatmap.max() <= 1.0, name
            assert ex.probs.shape == (3,) and abs(float(ex.probs.sum()) - 1) < 1e-4, name


def test_explain_cli_on_a_keras_file_and_a_run_folder(trained_run, color_data, tmp_path, capsys):
    model = _colour_classifier()
    model.save(tmp_path / "colours.keras")
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    cv2.imwrite(str(tmp_path / "planted.png"), cv2.cvtColor(_planted_rgb("green"), cv2.COLOR_RGB2BGR))
    out = tmp_path / "k"
    code, stdout, err = run_cli(["explain", tmp_path / "colours.keras", tmp_path / "planted.png", "--labels", tmp_path / "labels.txt",
                                 "--out", out], capsys)
    assert code == 0, err
    assert stdout.strip() == f"1 grad-cam map(s) in {out} (index: {out / 'index.json'})"
    index = json.loads((out / "index.json").read_text())
    assert index["method"] == "grad-cam" and index["labels"] == ["red", "green", "blue"]
    assert index["params"] == {"feature_map": [16, 16, 3]}
    (entry,) = index["images"]
    assert entry["output"] == "planted.png" and entry["label"] == "green" and "max_drop" not in entry
    x, y = entry["peak"]
    assert x >= 8 and y < 8
    assert cv2.imread(str(out / "planted.png")).shape[1] == 2 * 224 + 6

    out = tmp_path / "run"
    images = [color_data / c / f"{c}_001.png" for c in ("red", "green", "blue")]
    code, stdout, err = run_cli(["explain", trained_run, *images, "--out", out, "--target", "red"], capsys)
    assert code == 0, err
    index = json.loads((out / "index.json").read_text())
    assert [e["output"] for e in index["images"]] == ["red_001.png", "green_001.png", "blue_001.png"]
    assert [e["label"] for e in index["images"]] == ["red", "green", "blue"]
    assert {e["target"] for e in index["images"]} == {"red"}
    assert all((out / e["output"]).is_file() for e in index["images"])

    code, _, err = run_cli(["explain", trained_run, *images, "--out", out, "--patch", "4"], capsys)
    assert code == 1
    assert err == f"error: --patch/--stride: {trained_run} is a Keras model, explained with Grad-CAM; leave them out, or give its converted bundle\n"


def test_errors_grid_of_misclassified_images(trained_run, tmp_path):
    from edgesight.training.data import Sample, Split
    from edgesight.training.evaluate import load_model_source
    from edgesight.training.explain import errors_summary, write_errors_grid

    model, info, _ = load_model_source(trained_run)
    split = Split.load(trained_run / "split.json")
    samples = split.samples("test") + split.samples("val")
    # the run's metrics say how it did on its own test split; no errors there means no file
    metrics = json.loads((trained_run / "metrics.json").read_text())
    errors = metrics["errors"]
    assert errors["misclassified"] == metrics["num_samples"] - np.trace(metrics["confusion_matrix"])
    assert (trained_run / "errors.png").exists() == (errors["misclassified"] > 0)
    assert (errors["file"] == "errors.png") == (errors["misclassified"] > 0)

    # relabelled images: the model, right about their colour, must be wrong about the label
    shift = {"red": "green", "green": "blue", "blue": "red"}
    wrong = [Sample(s.path, shift[s.label]) for s in samples]
    probs = np.eye(3, dtype=np.float32)[[info.labels.index(s.label) for s in samples]]
    right = write_errors_grid(model, info, samples, tmp_path / "none.png", probs=probs)
    assert right == {"file": None, "misclassified": 0, "shown": 0} and not (tmp_path / "none.png").exists()
    assert errors_summary(right) == "no misclassified test images: no errors.png"

    res = write_errors_grid(model, info, wrong + samples, tmp_path / "errors.png", limit=7)
    assert res["file"] == "errors.png" and res["shown"] == 7
    assert res["misclassified"] >= len(wrong)  # each image is wrong at least once: as itself or relabelled
    assert errors_summary(res) == f"errors.png: 7 of {res['misclassified']} misclassified test images with Grad-CAM maps"
    picture = cv2.imread(str(tmp_path / "errors.png"))
    # 5 tiles in the first row, a second row of 2, a note under them
    tile_w = 2 * 112 + 6
    assert picture.shape[1] == 5 * tile_w + 6 * 6 and picture.shape[0] > 2 * 112
