"""``edgesight evaluate`` and the CLI's error handling."""

import json
import shutil

import pytest

from tests.conftest import run_cli, write_color_dataset

pytestmark = pytest.mark.slow


def test_evaluate_run_folder_on_its_test_split(trained_run, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", trained_run, "--json", tmp_path / "r.json", "--plot", tmp_path / "cm.png"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert {"accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class", "confusion_matrix", "labels"} <= set(r)
    assert r["split"] == "test" and r["num_samples"] == 6
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert r["accuracy"] == metrics["accuracy"] and r["confusion_matrix"] == metrics["confusion_matrix"]
    assert "blue" in out and "macro avg" in out and f"accuracy: {r['accuracy'] * 100:.2f}%" in out
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_on_a_holdout_folder(trained_run, tmp_path, capsys):
    holdout = write_color_dataset(tmp_path / "holdout", per_class=5, size=30, seed=99)
    (holdout / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    code, out, err = run_cli(["evaluate", trained_run, holdout, "--json", tmp_path / "h.json"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "h.json").read_text())
    assert r["split"] == "all" and r["num_samples"] == 15
    assert r["accuracy"] >= 0.8
    assert "skipped 1 file(s)" in out and "broken.png" in out


def test_evaluate_bare_keras_file_with_labels(trained_run, tmp_path, capsys):
    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    holdout = write_color_dataset(tmp_path / "h", per_class=3, size=16, seed=5)
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    code, out, err = run_cli(["evaluate", tmp_path / "m.keras", holdout, "--labels", tmp_path / "labels.txt"], capsys)
    assert code == 0, err
    assert "accuracy:" in out
    (tmp_path / "two.txt").write_text("blue\ngreen\n")
    code, out, err = run_cli(["evaluate", tmp_path / "m.keras", holdout, "--labels", tmp_path / "two.txt"], capsys)
    assert code == 1
    assert err.strip() == f"error: {tmp_path / 'two.txt'}: 2 labels but the model has 3 outputs; give the labels file the model was trained with"


def test_evaluate_unknown_class_in_data(trained_run, tmp_path, capsys):
    data = write_color_dataset(tmp_path / "d", per_class=2, size=16, classes={"red": (0, 0, 255), "purple": (200, 0, 200)})
    code, _, err = run_cli(["evaluate", trained_run, data], capsys)
    assert code == 1 and "classes not known to the model: purple; the model knows blue, green, red" in err


def test_not_a_model_file(tmp_path, capsys):
    (tmp_path / "fake.keras").write_text("not a zip")
    data = write_color_dataset(tmp_path / "d", per_class=2, size=8)
    code, _, err = run_cli(["evaluate", tmp_path / "fake.keras", data], capsys)
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'fake.keras'}: not a") and "Keras" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_lambda_model_needs_trust(tmp_path, capsys):
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    keras.Model(inp, out).save(tmp_path / "lam.keras")
    (tmp_path / "labels.txt").write_text("red\nblue\n")
    data = write_color_dataset(tmp_path / "d", per_class=2, size=8, classes={"red": (0, 0, 255), "blue": (255, 0, 0)})
    code, _, err = run_cli(["evaluate", tmp_path / "lam.keras", data, "--labels", tmp_path / "labels.txt"], capsys)
    assert code == 1 and "Lambda or custom layer" in err and "--trust-model" in err
    code, out, err = run_cli(["evaluate", tmp_path / "lam.keras", data, "--labels", tmp_path / "labels.txt", "--trust-model"], capsys)
    assert code == 0, err
    assert "accuracy:" in out


def test_train_cli_with_config_file_and_flag_override(tmp_path, capsys):
    data = write_color_dataset(tmp_path / "d", per_class=5, size=12)
    (tmp_path / "train.yaml").write_text(f"data: {data}\nimg_size: 12\nepochs: 3\nalpha: 0.25\naugment: none\nbatch_size: 8\nhflip: false\n")
    code, out, err = run_cli(["train", "--config", tmp_path / "train.yaml", "--epochs", "1", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    import yaml

    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and cfg["img_height"] == 12 and cfg["hflip"] is False and cfg["augment"] == "none"
    assert json.loads((tmp_path / "run" / "history.json").read_text())["loss"].__len__() == 1


def test_train_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    code, _, err = run_cli(["train", "--config", tmp_path / "bad.yaml"], capsys)
    assert code == 1 and err.startswith(f"error: {tmp_path / 'bad.yaml'}: unknown key 'epochz'; valid keys are data, out, model,")
    code, _, err = run_cli(["train", tmp_path / "missing"], capsys)
    assert code == 1 and err.strip() == f"error: {tmp_path / 'missing'}: no such file or folder; give a folder of class sub-folders or a CSV manifest"
    code, _, err = run_cli(["train", tmp_path, "--model", "resnet9"], capsys)
    assert code == 2 and "'resnet9' is not one of" in err


def test_datasets_synth_and_inspect(tmp_path, capsys):
    code, out, _ = run_cli(["datasets", "synth", tmp_path / "s", "--per-class", "5", "--size", "24"], capsys)
    assert code == 0 and out.strip() == f"wrote 30 images in 6 classes to {tmp_path / 's'}"
    assert len(list((tmp_path / "s" / "star").glob("*.png"))) == 5
    code, out, _ = run_cli(["datasets", "inspect", tmp_path / "s"], capsys)
    assert code == 0 and "folders layout, 6 classes" in out
    assert [l.split() for l in out.splitlines() if l.startswith("total")] == [["total", "18", "6", "6"]]
