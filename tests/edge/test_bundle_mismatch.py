"""A model.json that does not describe its .tflite (input size, channels, dtype, quantisation,
label count) is refused when the bundle is loaded, by ``run``, ``classify``, ``benchmark``,
``doctor`` and ``Classifier``, in one line naming the file, the field, both values and the fix."""

import json
import shutil

import pytest

from edgesight.edge.errors import BundleError
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

FIX = "model.json does not describe this model: copy the whole bundle again or re-run 'edgesight convert'"


def _size(d):
    d["preprocess"]["height"] = d["preprocess"]["width"] = 96


def _width(d):
    d["preprocess"]["width"] = 20


def _color(d):
    d["preprocess"]["color"] = "grayscale"


def _in_dtype(d):
    d["quantization"]["input"]["dtype"] = "int8"


def _in_scale(d):
    d["quantization"]["input"]["scale"] = 0.5


def _in_zero_point(d):
    d["quantization"]["input"]["zero_point"] = 128


def _out_dtype(d):
    d["quantization"]["output"]["dtype"] = "float32"


def _out_scale(d):
    d["quantization"]["output"]["scale"] = 0.1


def _labels(d):
    d["labels"].append("purple")


# The colour bundle: 16x16 RGB uint8 input (scale 1, zero point 0), uint8 output of 3 classes
# (scale 1/256, zero point 0).
CASES = {
    "size": (_size, "preprocess.height is 96 but the input height of model.tflite is 16"),
    "width": (_width, "preprocess.width is 20 but the input width of model.tflite is 16"),
    "color": (_color, "preprocess.color is grayscale (1 channel) but the input channel count of model.tflite is 3"),
    "input dtype": (_in_dtype, "quantization.input.dtype is int8 but the input dtype of model.tflite is uint8"),
    "input scale": (_in_scale, "quantization.input.scale is 0.5 but the input scale of model.tflite is 1.0"),
    "input zero point": (_in_zero_point, "quantization.input.zero_point is 128 but the input zero point of model.tflite is 0"),
    "output dtype": (_out_dtype, "quantization.output.dtype is float32 but the output dtype of model.tflite is uint8"),
    "output scale": (_out_scale, "quantization.output.scale is 0.1 but the output scale of model.tflite is 0.00390625"),
    "labels": (_labels, "labels has 4 names but the output of model.tflite has 3 classes"),
}


def mismatched(color_bundle, tmp_path, case):
    """A copy of the colour bundle whose model.json is edited by ``CASES[case]``."""
    edit, detail = CASES[case]
    bundle = shutil.copytree(color_bundle, tmp_path / "bundle")
    path = bundle / "model.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d, indent=2))
    (bundle / "labels.txt").write_text("".join(f"{x}\n" for x in d["labels"]))
    return bundle, f"{path}: {detail}; {FIX}"


COMMANDS = {
    "run": lambda b, tmp: ["run", b, "--source", "synthetic:64x48", "--max-frames", "2", "--headless", "--jsonl", tmp / "out.jsonl"],
    "classify": lambda b, tmp: ["classify", b, b / "model.tflite"],
    "benchmark": lambda b, tmp: ["benchmark", b, "--runs", "2", "--warmup", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cli_refuses_a_model_json_that_does_not_describe_the_model(color_bundle, tmp_path, capsys, command, case):
    bundle, message = mismatched(color_bundle, tmp_path, case)
    code, out, err = run_cli(COMMANDS[command](bundle, tmp_path), capsys)
    assert (code, out, err) == (1, "", f"error: {message}\n")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_classifier_api_refuses_it(color_bundle, tmp_path, case):
    from edgesight.edge.classifier import Classifier

    bundle, message = mismatched(color_bundle, tmp_path, case)
    with pytest.raises(BundleError) as e:
        Classifier(bundle)
    assert str(e.value) == message
    with pytest.raises(BundleError) as e:  # the .tflite named directly, model.json beside it
        Classifier(bundle / "model.tflite")
    assert str(e.value) == message


def test_doctor_says_the_bundle_cannot_run(color_bundle, tmp_path, capsys):
    bundle, message = mismatched(color_bundle, tmp_path, "size")
    code, out, _ = run_cli(["doctor", "--bundle", bundle], capsys)
    assert code == 1
    assert [line for line in out.splitlines() if "bundle loads" in line] == [f"[MISS] bundle loads             {message}"]


def test_an_intact_bundle_and_one_without_recorded_tensors_load(color_bundle, tmp_path):
    from edgesight.edge.classifier import Classifier

    assert Classifier(color_bundle).labels == ["blue", "green", "red"]
    bundle = shutil.copytree(color_bundle, tmp_path / "older")
    d = json.loads((bundle / "model.json").read_text())
    del d["quantization"]  # written before conversion recorded the tensors: size and labels are still checked
    (bundle / "model.json").write_text(json.dumps(d))
    assert Classifier(bundle).labels == ["blue", "green", "red"]
