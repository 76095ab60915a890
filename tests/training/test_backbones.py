import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.augment import PRESETS, build_augmentation
from edgesight.training.backbones import build_classifier, get_backbone, list_backbones


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown model 'resnet9'; choose one of cnn_small, efficientnet_lite0, mobilenet_v2"):
        get_backbone("resnet9")


def test_cnn_small_takes_raw_pixels_and_outputs_probabilities():
    model, base = build_classifier(get_backbone("cnn_small"), (32, 32, 1), 4, None, alpha=0.5)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 4)
    names = [layer.name for layer in model.layers]
    assert names[1] == "normalize" and names[-1] == "predictions"
    assert model.count_params() < 100_000  # alpha 0.5: tiny enough for a Pi Zero
    p = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32"), verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    bn = [layer for layer in base.layers if "bn" in layer.name]
    assert bn and all(abs(layer.momentum - 0.9) < 1e-9 for layer in bn)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_keras_applications_backbones_build_offline(name):
    model, base = build_classifier(get_backbone(name), (32, 32, 3), 3, "none", alpha=0.75 if name != "mobilenet_v2" else 0.35)
    assert model.output_shape == (None, 3)
    # Raw 0..255 pixels reach the backbone in [-1, 1], the range its ImageNet weights expect.
    norm = model.get_layer("normalize")
    assert [layer.name for layer in model.layers[1:3]] == ["normalize", base.name]
    assert type(norm).__name__ == "Rescaling"
    scaled = norm(np.array([[0.0, 127.5, 255.0]], dtype="float32"))
    np.testing.assert_allclose(np.asarray(scaled), [[-1.0, 0.0, 1.0]], atol=1e-6)
    # Normalisation lives in our graph, not in the backbone (include_preprocessing=False).
    assert not any(layer.__class__.__name__ == "Rescaling" for layer in base.layers)


def test_grayscale_input_is_repeated_for_rgb_backbones():
    model, _ = build_classifier(get_backbone("mobilenet_v3_small"), (32, 32, 1), 2, "none")
    assert model.input_shape == (None, 32, 32, 1)
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3


def test_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="cnn_small trains from scratch"):
        build_classifier(get_backbone("cnn_small"), (32, 32, 3), 2, "imagenet")
    with pytest.raises(ConfigError, match="missing.h5: weights file not found"):
        build_classifier(get_backbone("mobilenet_v2"), (32, 32, 3), 2, str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="needs inputs of at least 32x32, got 16x16"):
        build_classifier(get_backbone("mobilenet_v2"), (16, 16, 3), 2, "none")


def test_imagenet_download_failure_says_what_to_do(monkeypatch):
    import keras

    def offline(*a, **k):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v3.file_utils.get_file", offline)
    with pytest.raises(ConfigError, match="could not download ImageNet weights .* --weights PATH or --weights none"):
        build_classifier(get_backbone("mobilenet_v3_small"), (32, 32, 3), 2, "imagenet")


def test_local_weights_file_is_loaded(tmp_path):
    import keras

    src = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None, include_preprocessing=False)
    for w in src.weights:
        w.assign(np.full(w.shape, 0.125, dtype=w.dtype))
    path = tmp_path / "v3s.weights.h5"
    src.save_weights(path)
    _, base = build_classifier(get_backbone("mobilenet_v3_small"), (32, 32, 3), 2, str(path))
    assert float(base.weights[0].numpy().ravel()[0]) == 0.125


def test_augmentation_presets():
    assert build_augmentation("none") is None
    for preset in ("light", "standard", "strong"):
        aug = build_augmentation(preset, hflip=True, seed=1)
        names = [layer.name for layer in aug.layers]
        assert names[0] == "aug_flip" and {"aug_rotation", "aug_zoom", "aug_translation", "aug_brightness", "aug_contrast"} <= set(names)
    no_flip = build_augmentation("standard", hflip=False)
    assert "aug_flip" not in [layer.name for layer in no_flip.layers]
    assert PRESETS["strong"]["rotation"] > PRESETS["standard"]["rotation"] > PRESETS["light"]["rotation"]
    with pytest.raises(ConfigError, match="unknown augmentation preset 'wild'"):
        build_augmentation("wild")


def test_augmentation_changes_training_batches_only():
    aug = build_augmentation("strong", hflip=True, seed=3)
    x = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype("float32")
    train_out = np.asarray(aug(x, training=True))
    assert not np.allclose(train_out, x)
    np.testing.assert_allclose(np.asarray(aug(x, training=False)), x)
    assert train_out.min() >= 0 and train_out.max() <= 255.0 + 1e-3


def test_registry_has_required_backbones():
    assert {"cnn_small", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0"} <= set(list_backbones())


def test_the_head_pools_by_average_or_by_maximum():
    from edgesight.training.tf import import_keras

    keras = import_keras()
    avg, _ = build_classifier(get_backbone("cnn_small"), (16, 16, 3), 2, None, alpha=0.5)
    mx, _ = build_classifier(get_backbone("cnn_small"), (16, 16, 3), 2, None, alpha=0.5, pooling="max")
    assert isinstance(avg.get_layer("pool"), keras.layers.GlobalAveragePooling2D)
    assert isinstance(mx.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    with pytest.raises(ConfigError, match="pooling 'sum' is not one of avg, max"):
        build_classifier(get_backbone("cnn_small"), (16, 16, 3), 2, None, pooling="sum")
