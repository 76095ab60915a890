"""Edge TPU readiness report and the ``edgetpu_compiler`` wrapper.

Converted Keras models check the report end to end; hand-built one-op flatbuffers check the
documented per-op limitations without TensorFlow; a fake ``edgetpu_compiler`` on PATH checks the
compiler call, since the real one runs only on x86-64 Debian/Ubuntu.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest

from edgesight.convert.edgetpu import (
    FOLLOWS_UNMAPPED,
    INSTALL_COMMANDS,
    edgetpu_report,
    format_edgetpu_report,
    parse_compiler_log,
    run_edgetpu_compiler,
)
from edgesight.edge.errors import BundleError

SHAPE = (16, 16, 3)


# ---- converted Keras models -------------------------------------------------------------------


def _keras_model(middle: Optional[str] = None):
    import keras

    inp = keras.Input(SHAPE, batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    if middle == "leaky_relu":
        x = keras.layers.LeakyReLU(negative_slope=0.1)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(inp, out)


def _convert(model, int8: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(8):
                yield [rng.uniform(0, 1, (1,) + SHAPE).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def keras_model():
    return _keras_model()


@pytest.mark.slow
def test_int8_uint8_io_model_maps_every_op(keras_model):
    rep = edgetpu_report(_convert(keras_model, int8=True))
    ops = [o["op"] for o in rep["ops"]]
    assert ops[0] == ops[-1] == "QUANTIZE"
    for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"):
        assert name in ops
    assert rep["all_mapped"] and rep["first_unmapped"] is None
    assert rep["num_mapped"] == rep["num_ops"] == len(ops)
    assert all(o["mapped"] and o["reason"] is None and not o["cpu_after_unmapped"] for o in rep["ops"])
    assert rep["warnings"] == []
    (inp,), (out,) = rep["io"]["inputs"], rep["io"]["outputs"]
    assert inp["dtype"] == out["dtype"] == "UINT8"
    assert inp["shape"] == [1, *SHAPE] and out["shape"] == [1, 4]
    assert isinstance(inp["scale"], float) and isinstance(inp["zero_point"], int)
    conv = rep["ops"][ops.index("CONV_2D")]
    assert [t["dtype"] for t in conv["inputs"]] == ["INT8", "INT8", "INT32"]
    assert conv["outputs"][0]["shape"] == [1, 16, 16, 8]
    assert json.loads(json.dumps(rep)) == rep
    text = format_edgetpu_report(json.loads(json.dumps(rep)))
    assert f"{rep['num_ops']}/{rep['num_ops']} ops mapped" in text and "CONV_2D" in text


@pytest.mark.slow
def test_float_model_is_not_mapped(keras_model):
    rep = edgetpu_report(_convert(keras_model, int8=False))
    assert not rep["all_mapped"] and rep["first_unmapped"] == 0 and rep["num_mapped"] == 0
    first, rest = rep["ops"][0], rep["ops"][1:]
    assert not first["mapped"] and "float" in first["reason"] and not first["cpu_after_unmapped"]
    assert rest and all(o["reason"] == FOLLOWS_UNMAPPED and o["cpu_after_unmapped"] for o in rest)
    assert any("FLOAT32" in w and "inference_input_type" in w for w in rep["warnings"])
    assert "float" in format_edgetpu_report(rep)


@pytest.mark.slow
def test_unsupported_op_in_the_middle_sends_the_rest_to_the_cpu():
    rep = edgetpu_report(_convert(_keras_model("leaky_relu"), int8=True))
    ops = [o["op"] for o in rep["ops"]]
    k = ops.index("LEAKY_RELU")
    assert 0 < k < len(ops) - 1
    assert rep["first_unmapped"] == k and not rep["all_mapped"] and rep["num_mapped"] == k
    assert all(o["mapped"] for o in rep["ops"][:k])
    bad = rep["ops"][k]
    assert not bad["mapped"] and "unsupported op" in bad["reason"] and "LEAKY_RELU" in bad["reason"]
    for o in rep["ops"][k + 1 :]:
        assert not o["mapped"] and o["cpu_after_unmapped"] and o["reason"] == FOLLOWS_UNMAPPED
        assert o["own_reason"] is None  # each would map on its own
    text = format_edgetpu_report(rep)
    assert f"first unmapped: #{k} LEAKY_RELU" in text and FOLLOWS_UNMAPPED in text


# ---- one-op models built with the schema: the documented per-op limitations ------------------


def _one_op_model(
    op: str,
    tensors: Sequence[Dict],
    inputs: Sequence[int],
    outputs: Sequence[int],
    options=None,
    options_type: str = "NONE",
) -> bytes:
    """A single-operator TFLite model. Each tensor dict: shape, dtype ("INT8"), data, signature."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT()
    model.version = 3
    model.buffers = [s.BufferT()]
    graph = s.SubGraphT()
    graph.tensors = []
    for i, spec in enumerate(tensors):
        t = s.TensorT()
        t.name = f"t{i}"
        t.shape = list(spec["shape"])
        t.type = getattr(s.TensorType, spec.get("dtype", "INT8"))
        if "signature" in spec:
            t.shapeSignature = list(spec["signature"])
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [0.05], [spec.get("zero_point", 0)]
        t.quantization = q
        t.buffer = 0
        if "data" in spec:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.asarray(spec["data"]).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        graph.tensors.append(t)
    graph.inputs = [i for i in inputs if "data" not in tensors[i]]
    graph.outputs = list(outputs)
    code = s.OperatorCodeT()
    code.builtinCode = getattr(s.BuiltinOperator, op)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    model.operatorCodes = [code]
    o = s.OperatorT()
    o.opcodeIndex, o.inputs, o.outputs = 0, list(inputs), list(outputs)
    o.builtinOptionsType = getattr(s.BuiltinOptions, options_type)
    o.builtinOptions = options
    graph.operators = [o]
    model.subgraphs = [graph]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _options(name: str, **fields):
    from ai_edge_litert import schema_py_generated as s

    opts = getattr(s, name)()
    for k, v in fields.items():
        setattr(opts, k, v)
    return opts


def _reason(model: bytes) -> Optional[str]:
    rep = edgetpu_report(model)
    assert rep["num_ops"] == 1
    return rep["ops"][0]["reason"]


def _pool(act: int) -> bytes:
    opts = _options("Pool2DOptionsT", strideW=2, strideH=2, filterWidth=2, filterHeight=2, fusedActivationFunction=act)
    return _one_op_model("MAX_POOL_2D", [{"shape": [1, 4, 4, 8]}, {"shape": [1, 2, 2, 8]}], [0], [1], opts, "Pool2DOptions")


def _conv(dilation_h: int, dilation_w: int, weights_const: bool = True) -> bytes:
    opts = _options("Conv2DOptionsT", strideW=1, strideH=1, dilationHFactor=dilation_h, dilationWFactor=dilation_w)
    w = {"shape": [4, 3, 3, 8]}
    if weights_const:
        w["data"] = np.ones((4, 3, 3, 8), np.int8)
    tensors = [{"shape": [1, 8, 8, 8]}, w, {"shape": [4], "dtype": "INT32", "data": np.zeros(4, np.int32)}, {"shape": [1, 8, 8, 4]}]
    return _one_op_model("CONV_2D", tensors, [0, 1, 2], [3], opts, "Conv2DOptions")


def _mean(axes: Sequence[int], depth: int = 8) -> bytes:
    tensors = [
        {"shape": [1, 4, 4, depth]},
        {"shape": [len(axes)], "dtype": "INT32", "data": np.array(axes, np.int32)},
        {"shape": [1, depth]},
    ]
    return _one_op_model("MEAN", tensors, [0, 1], [2], _options("ReducerOptionsT", keepDims=False), "ReducerOptions")


def _strided_slice(strides: Sequence[int], **fields) -> bytes:
    const = lambda v: {"shape": [4], "dtype": "INT32", "data": np.array(v, np.int32)}  # noqa: E731
    tensors = [{"shape": [1, 8, 8, 4]}, const([0, 0, 0, 0]), const([1, 8, 8, 4]), const(strides), {"shape": [1, 4, 8, 4]}]
    opts = _options("StridedSliceOptionsT", **fields)
    return _one_op_model("STRIDED_SLICE", tensors, [0, 1, 2, 3], [4], opts, "StridedSliceOptions")


def _softmax(shape: Sequence[int]) -> bytes:
    opts = _options("SoftmaxOptionsT", beta=1.0)
    return _one_op_model("SOFTMAX", [{"shape": shape}, {"shape": shape}], [0], [1], opts, "SoftmaxOptions")


def _add(shape, signature=None, dtype: str = "INT8") -> bytes:
    t = {"shape": shape, "dtype": dtype}
    if signature is not None:
        t["signature"] = signature
    return _one_op_model("ADD", [t, dict(t), dict(t)], [0, 1], [2], _options("AddOptionsT"), "AddOptions")


def _concat(const_value: int, zero_point: int = -3) -> bytes:
    tensors = [
        {"shape": [1, 4, 4, 8]},
        {"shape": [1, 4, 4, 2], "zero_point": zero_point, "data": np.full((1, 4, 4, 2), const_value, np.int8)},
        {"shape": [1, 4, 4, 10]},
    ]
    opts = _options("ConcatenationOptionsT", axis=3)
    return _one_op_model("CONCATENATION", tensors, [0, 1], [2], opts, "ConcatenationOptions")


def _pad(paddings) -> bytes:
    tensors = [{"shape": [1, 4, 4, 8]}, {"shape": [4, 2], "dtype": "INT32", "data": np.array(paddings, np.int32)}, {"shape": [1, 6, 6, 8]}]
    return _one_op_model("PAD", tensors, [0, 1], [2], _options("PadOptionsT"), "PadOptions")


def test_concatenation_with_a_constant_must_be_zero_padding():
    assert _reason(_concat(-3)) is None  # quantized zero: the tensor's zero point
    assert "not all zeros" in _reason(_concat(5))


def test_pad_batch_dimension():
    assert _reason(_pad([[0, 0], [1, 1], [1, 1], [0, 0]])) is None
    assert "batch dimension" in _reason(_pad([[1, 0], [1, 1], [1, 1], [0, 0]]))
    old = edgetpu_report(_pad([[0, 0], [1, 1], [1, 1], [2, 2]]), runtime_version=12)
    assert "x and/or y only" in old["ops"][0]["reason"]


def test_fused_activation_on_pooling_is_not_mapped():
    assert _reason(_pool(0)) is None
    assert "fused activation RELU" in _reason(_pool(1))


def test_conv_dilation_and_constant_weights():
    assert _reason(_conv(2, 2)) is None
    assert "same dilation" in _reason(_conv(2, 1))
    assert "not a compile-time constant" in _reason(_conv(1, 1, weights_const=False))


def test_mean_axes():
    assert _reason(_mean([1, 2])) is None
    assert "batch dimension" in _reason(_mean([0, 1]))
    assert _reason(_mean([3], depth=8)) is None
    assert "multiple of 4" in _reason(_mean([3], depth=6))


def test_strided_slice_limits():
    assert _reason(_strided_slice([1, 1, 1, 1])) is None
    assert "all strides must be 1" in _reason(_strided_slice([1, 2, 1, 1]))
    assert "new_axis_mask" in _reason(_strided_slice([1, 1, 1, 1], newAxisMask=1))


def test_softmax_input_limits():
    assert _reason(_softmax([1, 10])) is None
    assert "1-D" in _reason(_softmax([1, 4, 10]))
    assert "16,000" in _reason(_softmax([1, 20000]))


def test_general_tensor_requirements():
    assert _reason(_add([1, 8, 8, 3])) is None
    assert "batch size 2" in _reason(_add([2, 8, 8, 3]))
    assert "rank" in _reason(_add([1, 2, 8, 8, 3]))
    assert "dynamic shape" in _reason(_add([1, 8, 8, 3], signature=[1, -1, -1, 3]))
    assert "INT16" in _reason(_add([1, 8, 8, 3], dtype="INT16"))
    assert "float" in _reason(_add([1, 8, 8, 3], dtype="FLOAT32"))


def test_runtime_version_gates_newer_ops():
    model = _one_op_model("TRANSPOSE", [{"shape": [1, 4, 8]}, {"shape": [3], "dtype": "INT32", "data": np.array([0, 2, 1], np.int32)},
                                         {"shape": [1, 8, 4]}], [0, 1], [2], _options("TransposeOptionsT"), "TransposeOptions")
    assert edgetpu_report(model)["all_mapped"]
    old = edgetpu_report(model, runtime_version=13)
    assert not old["all_mapped"] and "runtime 14+" in old["ops"][0]["reason"]


def test_not_a_tflite_model():
    with pytest.raises(BundleError, match="TFL3"):
        edgetpu_report(b"definitely not a flatbuffer")


# ---- the compiler -----------------------------------------------------------------------------

OK_LOG = """\
Edge TPU Compiler version 16.0.384591198
Input: {model}
Output: {stem}_edgetpu.tflite

Operator                       Count      Status

QUANTIZE                       2          Mapped to Edge TPU
CONV_2D                        1          Mapped to Edge TPU
LEAKY_RELU                     1          Operation not supported
DEPTHWISE_CONV_2D              1          More than one subgraph is not supported
"""

FAKE_COMPILER = """\
#!{python}
# Mimics edgetpu_compiler 16: [options] model; -s prints the op table; -o sets the output folder.
import os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ARGV_FILE"], "w") as f:
    f.write("\\n".join(args))
print("Edge TPU Compiler version 16.0.384591198")
if os.environ.get("FAKE_FAIL"):
    print("ERROR: Didn't find op for builtin opcode 'DEPTH_TO_SPACE' version '2'", file=sys.stderr)
    print("ERROR: Registration failed.", file=sys.stderr)
    sys.exit(1)
out = args[args.index("-o") + 1] if "-o" in args else "."
model = args[-1]
stem = os.path.splitext(os.path.basename(model))[0]
shutil.copy(model, os.path.join(out, stem + "_edgetpu.tflite"))
log = {log!r}.format(model=model, stem=stem)
with open(os.path.join(out, stem + "_edgetpu.log"), "w") as f:
    f.write(log)
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Model compiled successfully in 12 ms.")
print()
print("Input model: " + model)
print("Output model: " + os.path.join(out, stem + "_edgetpu.tflite"))
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: 5")
print("Operation log: " + stem + "_edgetpu.log")
print("Number of operations that will run on Edge TPU: 3")
print("Number of operations that will run on CPU: 2")
if "-s" in args:
    print()
    print(log.split("\\n\\n", 1)[1])
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
"""


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    return path


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER.format(python=sys.executable, log=OK_LOG))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", str(bin_dir))
    argv_file = tmp_path / "argv.txt"
    monkeypatch.setenv("FAKE_ARGV_FILE", str(argv_file))
    return argv_file


@pytest.mark.hardware
def test_compiler_missing_gives_install_hint(model_file, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    res = run_edgetpu_compiler(model_file, tmp_path / "out")
    assert res["compiled"] is False and res["path"] is None
    assert res["reason"].startswith("edgetpu_compiler not found: it runs only on x86-64 Linux")
    assert INSTALL_COMMANDS in res["reason"] and "sudo apt-get install edgetpu-compiler" in res["reason"]


@pytest.mark.hardware
def test_fake_compiler_success_is_parsed(model_file, tmp_path, fake_compiler):
    out = tmp_path / "out"
    res = run_edgetpu_compiler(model_file, out, timeout=60, min_runtime_version=13)
    assert res["compiled"] is True and res["reason"] is None
    assert res["path"] == str(out / "model_edgetpu.tflite") and Path(res["path"]).is_file()
    assert res["version"] == "16.0.384591198" and res["runtime_version"] == 14
    assert res["log_file"] == str(out / "model_edgetpu.log")
    assert "Compilation succeeded!" in res["log"] and "Operator" in res["log"]
    assert res["ops"] == [
        {"op": "QUANTIZE", "count": 2, "status": "Mapped to Edge TPU", "mapped": True},
        {"op": "CONV_2D", "count": 1, "status": "Mapped to Edge TPU", "mapped": True},
        {"op": "LEAKY_RELU", "count": 1, "status": "Operation not supported", "mapped": False},
        {"op": "DEPTHWISE_CONV_2D", "count": 1, "status": "More than one subgraph is not supported", "mapped": False},
    ]
    assert (res["num_ops_edgetpu"], res["num_ops_cpu"], res["num_subgraphs"], res["total_ops"]) == (3, 2, 1, 5)
    argv = fake_compiler.read_text().split("\n")
    assert argv == ["-s", "-o", str(out), "-m", "13", str(model_file)]


@pytest.mark.hardware
def test_fake_compiler_failure_reports_last_line(model_file, tmp_path, fake_compiler, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    res = run_edgetpu_compiler(model_file, tmp_path / "out")
    assert res["compiled"] is False and res["path"] is None
    assert res["reason"] == "ERROR: Registration failed."
    assert "DEPTH_TO_SPACE" in res["log"] and res["version"] == "16.0.384591198"


def test_missing_model_file_raises(tmp_path):
    with pytest.raises(BundleError, match="no such model file"):
        run_edgetpu_compiler(tmp_path / "nope.tflite", tmp_path)


def test_parse_compiler_log_reads_the_log_file_format():
    text = OK_LOG.format(model="m.tflite", stem="m")
    parsed = parse_compiler_log(text)
    assert parsed["version"] == "16.0.384591198" and parsed["runtime_version"] == 14
    assert [(o["op"], o["count"], o["mapped"]) for o in parsed["ops"]] == [
        ("QUANTIZE", 2, True), ("CONV_2D", 1, True), ("LEAKY_RELU", 1, False), ("DEPTHWISE_CONV_2D", 1, False),
    ]
    assert parse_compiler_log("Edge TPU Compiler version 14.1.317412892\n")["runtime_version"] == 13
    assert parse_compiler_log(text.replace("\n", "\r\n"))["ops"] == parsed["ops"]


def test_the_printed_report_says_why_nothing_was_compiled():
    from edgesight.convert.edgetpu import format_edgetpu_report
    from edgesight.convert.edgetpu.compiler import NOT_FOUND_REASON

    report = {"ops": [], "num_ops": 0, "num_mapped": 0, "io": {"inputs": [], "outputs": []},
              "compiler": {"compiled": False, "reason": NOT_FOUND_REASON}}
    assert format_edgetpu_report(report).splitlines()[-1] == f"not compiled: {NOT_FOUND_REASON}"
    report["compiler"] = {"compiled": True, "path": "b/model_edgetpu.tflite", "version": "16.0"}
    assert format_edgetpu_report(report).splitlines()[-1] == "compiled: b/model_edgetpu.tflite (edgetpu_compiler 16.0)"
