"""``edgesight convert`` on a small trained run: every mode, the report, the bundle, bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesight.convert.config import ConvertConfig
from edgesight.convert.convert import ConversionResult, convert_source
from edgesight.edge.errors import BundleError, ConfigError
from edgesight.edge.model.interpreter import TFLiteClassifier
from tests.conftest import run_cli, write_color_dataset
from edgesight.training.data import Split
from edgesight.training.pipeline import load_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_bundle(color_bundle):
    """The shared int8 bundle and its conversion result as read back from disk."""
    report = json.loads((color_bundle / "conversion_report.json").read_text())
    return color_bundle, ConversionResult(color_bundle, report, report["passed"])


def _keras_and_tflite_probs(run: Path, bundle: Path):
    """The run's Keras model with the bundle's temperature, softmax(logits / T), and the
    bundle's own scores, on the test split."""
    import keras

    from edgesight.convert.calibrate import logit_layer, predict_logits, softmax

    model = keras.models.load_model(run / "model.keras", compile=False)
    split = Split.load(run / "split.json")
    info = json.loads((run / "model.json").read_text())
    from edgesight.edge.model.spec import PreprocessSpec

    spec = PreprocessSpec.from_dict(info["preprocess"])
    images = load_batch([s.path for s in split.test], spec)
    t = json.loads((bundle / "model.json").read_text())["calibration"]["temperature"]
    kp = softmax(predict_logits(model, logit_layer(model), split.test, spec, progress=False), t)
    clf = TFLiteClassifier(bundle / "model.tflite")
    return kp, clf.predict_batch(images), clf


def test_int8_bundle_contents(int8_bundle, trained_run):
    out, res = int8_bundle
    assert {p.name for p in out.iterdir()} == {"model.tflite", "labels.txt", "model.json", "conversion_report.json", "converter.log", "reliability.png",
                                             "reference_embeddings.npy"}
    assert not out.with_name(out.name + ".partial").exists()
    info = json.loads((out / "model.json").read_text())
    data = (out / "model.tflite").read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["labels"] == ["blue", "green", "red"] and (out / "labels.txt").read_text() == "blue\ngreen\nred\n"
    q = info["quantization"]
    assert q["mode"] == "int8" and q["input"]["dtype"] == "uint8" and q["output"]["dtype"] == "uint8"
    assert q["input"]["zero_point"] == 0 and abs(q["input"]["scale"] - 1.0) < 0.01  # raw pixels in
    assert info["preprocess"] == json.loads((trained_run / "model.json").read_text())["preprocess"]
    assert info["source"]["run"] == str(trained_run.resolve())


def test_int8_report(int8_bundle, trained_run):
    out, res = int8_bundle
    r = json.loads((out / "conversion_report.json").read_text())
    for key in ("float_accuracy", "quant_accuracy", "agreement", "size_bytes", "float_size_bytes", "mean_abs_prob_diff", "per_class", "size_ratio"):
        assert key in r
    assert r["num_samples"] == len(Split.load(trained_run / "split.json").test) == 6
    assert r["size_bytes"] == (out / "model.tflite").stat().st_size
    assert r["calibration_images"] == len(Split.load(trained_run / "split.json").train)
    assert r["float_accuracy"] == json.loads((trained_run / "metrics.json").read_text())["accuracy"]
    assert r["passed"] == (r["accuracy_drop_pp"] <= 1.0) and res.passed == r["passed"]
    assert set(r["per_class"]) == {"blue", "green", "red"}


def test_int8_outputs_match_keras(int8_bundle, trained_run):
    out, _ = int8_bundle
    kp, qp, clf = _keras_and_tflite_probs(trained_run, out)
    assert clf.input.dtype == np.uint8
    assert np.abs(kp - qp).max() < 0.08  # one uint8 output step is 1/256; rounding compounds over layers
    assert (kp.argmax(1) == qp.argmax(1)).mean() >= 5 / 6


@pytest.mark.parametrize("mode,tol", [("float32", 1e-5), ("float16", 2e-3), ("dynamic", 0.05)])
def test_float_modes(trained_run, tmp_path, mode, tol):
    out = tmp_path / mode
    res = convert_source(trained_run, out, ConvertConfig(quant=mode), progress=False)
    kp, qp, clf = _keras_and_tflite_probs(trained_run, out)
    assert clf.input.dtype == np.float32
    assert np.abs(kp - qp).max() < tol
    assert res.report["mode"] == mode and res.report["calibration_images"] == 0
    if mode == "float32":
        assert res.report["size_ratio"] == 1.0
    if mode == "float16":
        assert 0.4 < res.report["size_ratio"] < 0.75


def test_int8_io_int8(trained_run, tmp_path):
    res = convert_source(trained_run, tmp_path / "b", ConvertConfig.int8(io="int8", num_calib=20), progress=False)
    info = json.loads((tmp_path / "b" / "model.json").read_text())
    assert info["quantization"]["input"]["dtype"] == "int8" and info["quantization"]["input"]["zero_point"] == -128
    assert res.report["calibration_images"] == 20


def test_cli_bare_keras_with_labels_and_plain_calibration_folder(trained_run, tmp_path, capsys):
    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    calib = tmp_path / "calib"
    calib.mkdir()
    data = write_color_dataset(tmp_path / "holdout", per_class=6, size=20, seed=11)
    for p in sorted(data.rglob("*.png"))[::2]:
        shutil.copy(p, calib / f"{p.parent.name}_{p.name}")
    code, out, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", calib,
                              "--eval", data, "--quant", "int8", "--out", tmp_path / "bundle"], capsys)
    assert code in (0, 1), err
    r = json.loads((tmp_path / "bundle" / "conversion_report.json").read_text())
    assert r["calibration_images"] == 9 and r["num_samples"] == 18 and r["verification_split"] == "eval"
    assert "top-1 accuracy" in out and "agreement" in out and "bundle:" in out
    # A plain folder has no labels: nothing to fit a temperature on, and the report says why.
    assert r["calibration"]["applied"] is False and r["calibration"]["temperature"] == 1.0
    assert "give --calib a labelled dataset" in r["calibration"]["note"] and "ECE (15 bins)" in out


def test_mismatched_calibration_fails_the_check_but_keeps_the_bundle(trained_run, tmp_path, capsys):
    # Calibrating on images unlike the real input is the classic silent int8 failure.
    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    calib = tmp_path / "dark"
    calib.mkdir()
    for i in range(8):
        cv2.imwrite(str(calib / f"{i}.png"), np.full((16, 16, 3), i, np.uint8))
    data = write_color_dataset(tmp_path / "holdout", per_class=8, size=16, seed=12)
    code, out, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", calib,
                              "--eval", data, "--out", tmp_path / "bundle"], capsys)
    r = json.loads((tmp_path / "bundle" / "conversion_report.json").read_text())
    assert r["accuracy_drop_pp"] > 1.0 and r["passed"] is False
    assert code == 1
    assert "more than --max-drop 1.0" in err and "--num-calib" in err and "--per-tensor" in err and "float16" in err
    assert (tmp_path / "bundle" / "model.tflite").exists()


def test_bad_inputs_leave_no_bundle(trained_run, tmp_path, capsys):
    out = tmp_path / "bundle"
    (tmp_path / "fake.keras").write_text("nope")
    code, _, err = run_cli(["convert", tmp_path / "fake.keras", "--out", out], capsys)
    assert code == 1 and "fake.keras: not a" in err

    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    (tmp_path / "two.txt").write_text("a\nb\n")
    code, _, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "two.txt", "--out", out], capsys)
    assert code == 1 and "two.txt: 2 labels but the model has 3 outputs" in err

    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", tmp_path / "empty", "--out", out], capsys)
    assert code == 1 and "empty" in err and ("no readable images" in err or "empty" in err)

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not an image")
    code, _, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", tmp_path / "junk", "--out", out], capsys)
    assert code == 1 and "junk: no readable images for calibration" in err

    code, _, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--out", out], capsys)
    assert code == 1 and "int8 needs calibration images: give --calib DATA" in err

    import keras

    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(inp)).save(tmp_path / "vec.keras")
    code, _, err = run_cli(["convert", tmp_path / "vec.keras", "--labels", tmp_path / "labels.txt", "--out", out], capsys)
    assert code == 1 and "is not an image" in err
    assert not out.exists() and not (tmp_path / "bundle.partial").exists()


def test_config_validation():
    with pytest.raises(ConfigError, match="--edgetpu needs --quant int8"):
        ConvertConfig(quant="float16", edgetpu=True)
    with pytest.raises(ConfigError, match="--edgetpu needs --io uint8"):
        ConvertConfig(quant="int8", io="int8", edgetpu=True)
    with pytest.raises(ConfigError, match="quant: 'int4' is not one of int8, float16, dynamic, float32"):
        ConvertConfig(quant="int4")


def test_interpreter_rejects_non_models(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(BundleError, match="x.tflite: not a loadable TFLite model"):
        TFLiteClassifier(tmp_path / "x.tflite")


def test_edgetpu_bundle_without_compiler(trained_run, tmp_path, monkeypatch):
    empty = tmp_path / "nobin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    res = convert_source(trained_run, tmp_path / "coral", ConvertConfig.int8(edgetpu=True, num_calib=30), progress=False)
    rep = json.loads((tmp_path / "coral" / "edgetpu_report.json").read_text())
    assert rep["all_mapped"] is True and rep["num_mapped"] == rep["num_ops"] > 5
    assert rep["compiler"]["compiled"] is False and "x86-64 Linux" in rep["compiler"]["reason"]
    assert res.report["edgetpu"]["all_mapped"] is True
    assert not (tmp_path / "coral" / "model_edgetpu.tflite").exists()
    info = json.loads((tmp_path / "coral" / "model.json").read_text())
    assert info["quantization"]["input"]["shape"] == [1, 16, 16, 3]  # static batch 1


@pytest.mark.hardware
def test_edgetpu_bundle_with_compiler(trained_run, tmp_path, monkeypatch):
    import stat
    import sys

    from tests.convert.test_edgetpu import FAKE_COMPILER, OK_LOG

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER.format(python=sys.executable, log=OK_LOG))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_ARGV_FILE", str(tmp_path / "argv.txt"))
    convert_source(trained_run, tmp_path / "coral", ConvertConfig.int8(edgetpu=True, num_calib=30), progress=False)
    rep = json.loads((tmp_path / "coral" / "edgetpu_report.json").read_text())
    assert rep["compiler"]["compiled"] is True and "Compilation succeeded!" in rep["compiler"]["log"]
    compiled = tmp_path / "coral" / "model_edgetpu.tflite"
    assert compiled.is_file()
    # the runtime verifies the compiled model as it verifies model.tflite
    info = json.loads((tmp_path / "coral" / "model.json").read_text())
    assert info["edgetpu_sha256"] == hashlib.sha256(compiled.read_bytes()).hexdigest()


def test_mediapipe_reads_our_labels_and_agrees(int8_bundle, trained_run):
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    from edgesight.edge.model.preprocess import load_for_model
    from edgesight.edge.model.spec import read_model_info

    out, res = int8_bundle
    info = read_model_info(out)
    ours = TFLiteClassifier(out / "model.tflite")
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(out / "model.tflite")), max_results=3)
    samples = Split.load(trained_run / "split.json").test
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for s in samples:
            px = load_for_model(Path(s.path), info.preprocess)
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(px)))
            top = result.classifications[0].categories[0]
            assert top.category_name == info.labels[top.index]
            assert top.index == int(ours.predict(px).argmax())
    assert res.report["predictions_quant"] == [int(ours.predict(load_for_model(Path(s.path), info.preprocess)).argmax()) for s in samples]


def test_evaluate_bundle_matches_conversion_report(int8_bundle, trained_run, tmp_path, capsys):
    out, res = int8_bundle
    code, text, err = run_cli(["evaluate", out, "--json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "e.json").read_text())
    assert r["split"] == "test" and r["accuracy"] == res.report["quant_accuracy"]
    code, text, err = run_cli(["evaluate", out / "model.tflite", trained_run, "--json", tmp_path / "f.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "f.json").read_text())["accuracy"] == r["accuracy"]


def test_bundle_sha256_and_bare_tflite_labels(int8_bundle, tmp_path):
    from edgesight.edge.model.bundle import load_bundle

    out, _ = int8_bundle
    b = load_bundle(out)
    assert b.model_path == out / "model.tflite" and b.info.labels == ("blue", "green", "red")
    bare = tmp_path / "bare.tflite"
    shutil.copy(out / "model.tflite", bare)
    info = load_bundle(bare).info  # labels from the embedded metadata
    assert info.labels == ("blue", "green", "red") and info.preprocess.size == (16, 16)
    copy = tmp_path / "tampered"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.tflite: sha256 does not match .*model.json"):
        load_bundle(copy)


def test_out_never_replaces_data_that_is_not_a_bundle(trained_run, tmp_path, capsys):
    from tests.conftest import run_cli

    victim = tmp_path / "photos"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    code, out, err = run_cli(["convert", trained_run, "-o", victim, "--quant", "float32"], capsys)
    assert code == 1 and "photos: exists and is not a model bundle" in err
    assert (victim / "notes.txt").read_text() == "keep me"
    code, out, err = run_cli(["convert", trained_run, "-o", trained_run, "--quant", "float32"], capsys)
    assert code == 1 and "is or holds the model being converted" in err
    code, out, err = run_cli(["convert", trained_run, "-o", trained_run.parent, "--quant", "float32"], capsys)
    assert code == 1 and "is or holds the model being converted" in err
    assert (trained_run / "model.keras").is_file()


def _flat_folder(tmp_path: Path, per_class: int, seed: int) -> Path:
    """A folder of images without class sub-folders (no labels)."""
    data = write_color_dataset(tmp_path / "labelled", per_class=per_class, size=20, seed=seed)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(data.rglob("*.png")):
        shutil.copy(p, flat / f"{p.parent.name}_{p.name}")
    return flat


def test_cli_bare_keras_with_only_a_plain_folder_holds_part_of_it_out(trained_run, tmp_path, capsys):
    from edgesight.convert.api import ConversionReport

    shutil.copy(trained_run / "model.keras", tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("blue\ngreen\nred\n")
    flat = _flat_folder(tmp_path, per_class=5, seed=21)
    code, out, err = run_cli(["convert", tmp_path / "m.keras", "--labels", tmp_path / "labels.txt", "--calib", flat,
                              "--out", tmp_path / "bundle"], capsys)
    assert code in (0, 1), err
    r = json.loads((tmp_path / "bundle" / "conversion_report.json").read_text())
    # 15 images: 3 held out (20 %) to compare the int8 model with the Keras model, 12 calibrate.
    assert r["labelled"] is False and r["verification_split"] == "calib-holdout"
    assert r["num_samples"] == 3 and r["calibration_images"] == 12
    assert r["float_accuracy"] is None and r["quant_accuracy"] is None and r["accuracy_drop_pp"] is None
    assert r["changed_pp"] == round((1 - r["agreement"]) * 100, 4)
    assert r["passed"] == (r["changed_pp"] <= 1.0) and code == (0 if r["passed"] else 1)
    assert sum(v["support"] for v in r["per_class"].values()) == 3
    assert r["ece"] == {} and not (tmp_path / "bundle" / "reliability.png").exists()
    assert "(no labels)" in out and "verified on 3 unlabelled images (calib-holdout), calibrated on 12" in out
    assert "give --eval DATA (labelled images) to measure it" in out
    rep = ConversionReport.load(tmp_path / "bundle")
    assert rep.labelled is False and rep.float_accuracy is None and rep.per_class_change_pp == {}
    assert rep.changed_pp == r["changed_pp"]


def test_run_folder_with_a_plain_calibration_folder_verifies_on_its_test_split(trained_run, tmp_path):
    flat = _flat_folder(tmp_path, per_class=4, seed=22)
    res = convert_source(trained_run, tmp_path / "b", ConvertConfig.int8(calib=str(flat)), progress=False)
    assert res.report["labelled"] is True and res.report["verification_split"] == "test"
    assert res.report["num_samples"] == len(Split.load(trained_run / "split.json").test)
    assert res.report["calibration_images"] == 12


def test_hold_out_is_deterministic_disjoint_and_needs_two_images(tmp_path):
    from edgesight.convert.convert import hold_out
    from edgesight.edge.errors import DatasetError
    from edgesight.training.data import Sample

    samples = [Sample(f"/x/{i}.png", "") for i in range(11)]
    calib, held = hold_out(samples, 0.2, 3, tmp_path)
    assert len(held) == 2 and len(calib) == 9 and {s.path for s in calib} | {s.path for s in held} == {s.path for s in samples}
    assert hold_out(samples, 0.2, 3, tmp_path) == (calib, held) and hold_out(samples, 0.2, 4, tmp_path) != (calib, held)
    assert [len(x) for x in hold_out(samples[:2], 0.2, 0, tmp_path)] == [1, 1]
    with pytest.raises(DatasetError, match=rf"^{tmp_path}: 1 readable image is too few to calibrate on and verify with; .*give --eval DATA"):
        hold_out(samples[:1], 0.2, 0, tmp_path)


def test_failure_message_without_labels_names_the_bound_and_the_fix(tmp_path):
    from edgesight.convert.convert import ADVICE, failure_message

    report = {"labelled": False, "changed_pp": 12.5, "num_samples": 8, "max_drop_pp": 1.0}
    assert failure_message(report, tmp_path / "b") == (
        f"error: 12.50 % of the 8 held-out images changed label (more than --max-drop 1.0; without labels that share bounds "
        f"the accuracy drop); the bundle is kept in {tmp_path / 'b'}; give --eval DATA (labelled images) to measure the drop itself; {ADVICE}")
    labelled = {"labelled": True, "accuracy_drop_pp": 3.25, "max_drop_pp": 1.0}
    assert failure_message(labelled, tmp_path / "b") == f"error: accuracy dropped 3.25 pp (more than --max-drop 1.0); the bundle is kept in {tmp_path / 'b'}; {ADVICE}"


def test_failure_message_names_the_calibration_folder_first_when_one_was_given(tmp_path):
    from edgesight.convert.convert import ADVICE, failure_message

    report = {"labelled": True, "accuracy_drop_pp": 80.0, "max_drop_pp": 1.0, "config": {"calib": "dusk-frames/"}}
    msg = failure_message(report, tmp_path / "b")
    assert msg.startswith(f"error: accuracy dropped 80.00 pp (more than --max-drop 1.0); the bundle is kept in {tmp_path / 'b'}; "
                          "first check that the --calib images (dusk-frames/) look like what the camera sees")
    assert msg.endswith("then try: " + ADVICE.split("try: ", 1)[1]) and "--num-calib 1000" in msg
    assert "--calib" not in failure_message({**report, "config": {"calib": None}}, tmp_path / "b")
