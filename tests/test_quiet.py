"""Quiet by default: what TensorFlow, LiteRT and the converter print natively stays out of the
normal output of every command and shows with ``edgesight -v``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesight.edge.native_log import native_output

EDGESIGHT = str(Path(sys.executable).parent / "edgesight")
XNNPACK = "Created TensorFlow Lite XNNPACK delegate for CPU."
# Lines TensorFlow, Keras, LiteRT and the converter print on their own.
NOISE = (
    XNNPACK,
    "absl::InitializeLog()",
    "oneDNN custom operations",
    "This TensorFlow binary is optimized",
    "cpu_feature_guard",
    "Your input ran out of data",
    "Saved artifact at",
    "SavedModel",
    "Estimated count of arithmetic ops",
    "fully_quantize",
    "UserWarning",
)


def edgesight(*args) -> str:
    """Run the installed ``edgesight`` with stdout and stderr merged; fails on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGESIGHT_VERBOSE")}
    r = subprocess.run([EDGESIGHT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout
    return r.stdout


def assert_quiet(output: str) -> None:
    found = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert not found, "native noise in the normal output:\n" + "\n".join(found)


def assert_no_repeated_lines(output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip() and "TensorSpec(shape=()" not in line]
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    assert not repeated, "lines printed twice:\n" + "\n".join(repeated)


def test_native_output_goes_to_the_log(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="edgesight")
    with native_output("testing") as out:
        os.write(2, b"from C\n")
        os.write(2, b"I0000 00:00:1.0    1 port.cc:1] banner\nI0000 00:00:2.0    1 port.cc:1] banner\n")
    assert capfd.readouterr().err == ""
    assert "from C" in out.text
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edgesight.native"]
    assert records == [
        (logging.DEBUG, "[testing] from C"),
        (logging.DEBUG, "[testing] I0000 00:00:1.0    1 port.cc:1] banner"),
    ]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_native_output_of_a_failed_call_is_an_error(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="edgesight")
    with pytest.raises(RuntimeError, match="boom"):
        with native_output("loading x") as out:
            with native_output("nested"):
                os.write(2, b"ERROR: the reason\n")
            raise RuntimeError("boom")
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "edgesight.native"] == [
        (logging.ERROR, "[loading x] ERROR: the reason")
    ]
    assert out.stream.closed


def test_dataset_length_is_known(color_data):
    # An unknown length makes Keras warn "Your input ran out of data" after the first epoch.
    from edgesight.edge.model.spec import PreprocessSpec
    from edgesight.training.pipeline import make_dataset

    paths = sorted(str(p) for p in Path(color_data).rglob("*.png"))[:21]
    ds = make_dataset(paths, [0] * len(paths), PreprocessSpec(height=8, width=8), 3, batch_size=8, training=True)
    assert int(ds.cardinality()) == 3


def test_classify_is_quiet_and_verbose_shows_litert(color_bundle, color_data):
    out = edgesight("classify", color_bundle, Path(color_data) / "red")
    assert_quiet(out)
    assert "red_000.png" in out
    verbose = edgesight("-v", "classify", color_bundle, Path(color_data) / "red")
    assert verbose.count(XNNPACK) == 1, verbose


@pytest.mark.slow
def test_train_and_convert_are_quiet(color_data, tmp_path):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    out = edgesight("train", color_data, "--out", run, "--model", "cnn_small", "--img-size", 16, "--epochs", 2,
                    "--batch-size", 16, "--alpha", 0.25, "--early-stopping", 0)
    assert_quiet(out)
    assert_no_repeated_lines(out)
    assert "run folder" in out
    out = edgesight("convert", run, "--out", bundle, "--max-drop", 100)
    assert_quiet(out)
    assert_no_repeated_lines(out)
    assert "top-1 accuracy" in out
    # The converter's output is kept in the bundle.
    assert "Saved artifact at" in (bundle / "converter.log").read_text()

    verbose = edgesight("-v", "convert", run, "--out", tmp_path / "bundle-v", "--max-drop", 100)
    assert XNNPACK in verbose
    assert "[importing TensorFlow]" in verbose and "[converting]" in verbose
    assert "top-1 accuracy" in verbose


def test_native_output_without_a_temporary_file_runs_uncaptured(monkeypatch, capfd):
    # A read-only or full SD card must not stop a model from loading.
    import tempfile

    def no_tmp(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_tmp)
    with native_output("loading x") as out:
        os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n" and out.text == ""
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
