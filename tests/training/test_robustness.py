"""``edgesight evaluate --robustness`` and the ``robust`` augmentation preset."""

import json
import zipfile

import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.augment import build_augmentation
from edgesight.training.corruptions import CORRUPTIONS, SEVERITIES
from tests.conftest import run_cli, write_color_dataset

pytestmark = pytest.mark.slow


def check_model_entry(m: dict, names) -> None:
    assert set(m) == {"source", "clean_accuracy", "mean_corruption_accuracy", "accuracy", "mean_by_corruption",
                      "mean_by_severity", "worst_by_severity"}
    assert list(m["accuracy"]) == list(names)
    grid = np.array([m["accuracy"][c] for c in names])
    assert grid.shape == (len(names), len(SEVERITIES)) and ((grid >= 0) & (grid <= 1)).all()
    assert m["mean_corruption_accuracy"] == pytest.approx(grid.mean(), abs=1e-4)
    assert m["mean_by_severity"] == pytest.approx(grid.mean(axis=0).tolist(), abs=1e-4)
    assert m["worst_by_severity"] == pytest.approx(grid.min(axis=0).tolist(), abs=1e-4)
    assert m["mean_by_corruption"] == pytest.approx({c: grid[i].mean() for i, c in enumerate(names)}, abs=1e-4)


def test_float_and_int8_side_by_side(trained_run, color_bundle, tmp_path, capsys):
    names = ["gaussian_noise", "dark", "occlusion"]
    code, out, err = run_cli(["evaluate", trained_run, "--robustness", "--bundle", color_bundle, "--corruptions", ",".join(names),
                              "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["split"] == "test" and r["num_samples"] == 6 and r["seed"] == 0 and r["severities"] == [1, 2, 3, 4, 5]
    assert list(r["corruptions"]) == names and r["corruptions"]["dark"]["values"] == [1, 2, 3, 4, 5]
    assert list(r["models"]) == ["float", "int8"]
    for m in r["models"].values():
        check_model_entry(m, names)
    # Clean float accuracy is the run's own test accuracy: the same images through the same decoder.
    assert r["models"]["float"]["clean_accuracy"] == pytest.approx(json.loads((trained_run / "metrics.json").read_text())["accuracy"], abs=1e-4)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy % (float / int8)" in out and "mean corruption accuracy: float" in out and ", int8 " in out
    assert all(n in out for n in names) and f"wrote {tmp_path / 'r.json'}" in out
    # Same seed, same report.
    code, _, err = run_cli(["evaluate", trained_run, "--robustness", "--bundle", color_bundle, "--corruptions", ",".join(names),
                            "--json", tmp_path / "again.json", "--plot", tmp_path / "again.png"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "again.json").read_text())["models"] == r["models"]


def test_bundle_alone_on_a_folder_writes_beside_the_caller(color_bundle, color_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["evaluate", color_bundle, color_data, "--robustness", "--seed", "3"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "robustness.json").read_text())
    assert (tmp_path / "robustness.png").exists()
    assert r["split"] == "all" and r["num_samples"] == 60 and r["seed"] == 3
    assert list(r["models"]) == ["int8"] and list(r["corruptions"]) == list(CORRUPTIONS)
    check_model_entry(r["models"]["int8"], list(CORRUPTIONS))
    assert r["models"]["int8"]["clean_accuracy"] >= 0.8
    # Colour is all these images carry: turning it to grey with the lowest contrast costs accuracy.
    assert r["models"]["int8"]["accuracy"]["contrast"][4] < r["models"]["int8"]["clean_accuracy"]


def test_run_folder_default_outputs_go_into_the_run(trained_run, capsys):
    code, out, err = run_cli(["evaluate", trained_run, "--robustness", "--corruptions", "jpeg"], capsys)
    try:
        assert code == 0, err
        r = json.loads((trained_run / "robustness.json").read_text())
        assert list(r["models"]) == ["float"] and list(r["corruptions"]) == ["jpeg"]
        assert (trained_run / "robustness.png").exists()
    finally:
        (trained_run / "robustness.json").unlink(missing_ok=True)
        (trained_run / "robustness.png").unlink(missing_ok=True)


def test_mistakes_get_one_line_with_the_fix(trained_run, color_bundle, tmp_path, capsys):
    code, _, err = run_cli(["evaluate", trained_run, "--bundle", color_bundle], capsys)
    assert code == 1 and err.strip() == "error: --bundle and --corruptions belong to the robustness report: add --robustness"
    code, _, err = run_cli(["evaluate", trained_run, "--robustness", "--corruptions", "fog"], capsys)
    assert code == 1 and "--corruptions: unknown corruption 'fog'; choose from gaussian_noise" in err
    code, _, err = run_cli(["evaluate", color_bundle, "--robustness", "--bundle", color_bundle], capsys)
    assert code == 1 and "is already a TFLite model; give its run folder or .keras file as MODEL" in err
    code, _, err = run_cli(["evaluate", trained_run, "--robustness", "--bundle", trained_run], capsys)
    assert code == 1 and "not a model bundle or .tflite file; give the folder written by 'edgesight convert'" in err
    other = tmp_path / "other"
    (other).mkdir()
    for f in color_bundle.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    info = json.loads((other / "model.json").read_text())
    info["labels"] = ["b", "g", "r"]
    (other / "model.json").write_text(json.dumps(info))
    (other / "labels.txt").write_text("b\ng\nr\n")
    code, _, err = run_cli(["evaluate", trained_run, "--robustness", "--bundle", other], capsys)
    assert code == 1 and "differ from" in err and "give the bundle converted from this model" in err
    for e in (err,):
        assert "Traceback" not in e and len(e.strip().splitlines()) == 1


def test_robust_preset_corrupts_training_batches_only():
    for channels in (3, 1):
        aug = build_augmentation("robust", hflip=False, seed=2)
        names = [layer.name for layer in aug.layers]
        assert names == ["aug_rotation", "aug_zoom", "aug_translation", "aug_occlusion", "aug_blur", "aug_contrast", "aug_exposure",
                         "aug_noise", "aug_jpeg"]
        x = np.random.default_rng(0).uniform(0, 255, (64, 16, 16, channels)).astype("float32")
        np.testing.assert_allclose(np.asarray(aug(x, training=False)), x)
        for layer in aug.layers[3:]:
            layer.images_seen.assign(layer.ramp_images)  # past the curriculum's ramp: full strengths
            y = np.asarray(layer(x, training=True))
            assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
            changed = np.abs(y - x).reshape(len(x), -1).max(axis=1) > 1e-3
            assert 0 < changed.sum() < len(x), layer.name  # a random share of the batch, not all of it
    with pytest.raises(ConfigError, match="unknown augmentation preset 'robustt'"):
        build_augmentation("robustt")


def test_robust_blur_gives_every_image_its_own_normalised_kernel():
    from edgesight.training.robust_augment import RandomBlur

    x = np.zeros((4, 24, 24, 3), np.float32)
    x[1, 12, 12] = [255, 0, 100]
    x[3] = 100.0
    y = np.asarray(RandomBlur(1.0, seed=1)(x, training=True))
    assert np.abs(y[0]).max() == 0 and np.abs(y[2]).max() == 0  # nothing leaks between images
    np.testing.assert_allclose(y[1].sum(axis=(0, 1)), [255, 0, 100], rtol=1e-4)
    assert (y[1, ..., 0] > 0).sum() > 1  # the point is spread
    np.testing.assert_allclose(y[3], 100.0, rtol=1e-5)


def test_robust_preset_trains_and_leaves_no_trace_in_the_exported_model(tmp_path):
    import keras

    from edgesight.training.config import TrainConfig
    from edgesight.training.train import train

    data = write_color_dataset(tmp_path / "d", per_class=6, size=16)
    out = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(out), img_size=16, epochs=1, batch_size=8, augment="robust", alpha=0.25), progress=False)
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert not any(layer.name.startswith("aug") for layer in model.layers)
    with zipfile.ZipFile(out / "model.keras") as z:
        config = z.read("config.json").decode()
    assert "aug_" not in config and "RandomBlur" not in config and "RandomJpeg" not in config
    assert "augment: robust" in (out / "config.yaml").read_text()


def test_robust_layers_leave_most_images_clean_and_stay_in_range():
    from edgesight.training.robust_augment import RATES, robust_layers

    x = np.random.default_rng(1).uniform(0, 255, (400, 16, 16, 3)).astype("float32")
    layers = robust_layers(seed=4, ramp_images=0)
    untouched = np.ones(len(x), bool)
    for layer, rate in zip(layers, RATES.values()):
        np.testing.assert_array_equal(np.asarray(layer(x)), x)  # training unset: the identity
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        y = np.asarray(layer(x, training=True))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
        changed = np.abs(y - x).reshape(len(x), -1).max(axis=1) > 1e-3
        spread = 4 * np.sqrt(rate * (1 - rate) / len(x))  # four binomial standard deviations
        assert abs(changed.mean() - rate) < spread, layer.name
        untouched &= ~changed
    assert 0.3 < untouched.mean() < 0.5  # about 40 % of the images see none of them


def test_robust_strengths_ramp_up_with_the_images_seen():
    from edgesight.training.robust_augment import RandomNoise

    x = np.full((200, 16, 16, 1), 128.0, np.float32)
    layer = RandomNoise(1.0, max_sigma=0.38, seed=3, ramp_images=1000, ramp_start=0.3)
    layer(x)  # inference does not count
    assert float(np.asarray(layer.images_seen)) == 0
    first = np.asarray(layer(x, training=True)).reshape(len(x), -1).std(axis=1)
    assert first.max() < 1.1 * 0.3 * 0.38 * 255  # 30 % of the range at the start
    for _ in range(5):
        layer(x, training=True)
    assert float(np.asarray(layer.images_seen)) == 1000  # counts up to the ramp's end, then stays
    last = np.asarray(layer(x, training=True)).reshape(len(x), -1).std(axis=1)
    assert last.max() > 1.5 * 0.3 * 0.38 * 255


def test_robust_low_contrast_blends_towards_the_mean_or_a_bright_veil():
    from edgesight.training.robust_augment import RandomLowContrast

    x = np.random.default_rng(2).uniform(0, 80, (256, 16, 16, 3)).astype("float32")
    spread = x.std(axis=(1, 2, 3))
    flat = np.asarray(RandomLowContrast(1.0, veil=0.0, seed=1)(x, training=True))
    np.testing.assert_allclose(flat.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-4)
    kept = flat.std(axis=(1, 2, 3)) / spread
    assert kept.min() >= 0.05 - 1e-3 and kept.max() <= 1 + 1e-3
    assert 0.4 < (kept < 0.2).mean() < 0.7  # log-uniform factors: about half below the report's severity 3
    veiled = np.asarray(RandomLowContrast(1.0, veil=1.0, seed=1)(x, training=True))
    assert (veiled.mean(axis=(1, 2, 3)) > x.mean(axis=(1, 2, 3)) + 1).all() and veiled.max() <= 0.95 * 255
