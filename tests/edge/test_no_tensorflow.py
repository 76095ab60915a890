"""The device runtime and the CLI's help must work where TensorFlow is not installed."""

import subprocess
import sys

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TF + code], capture_output=True, text=True, timeout=120)


def test_import_edge_without_tensorflow():
    r = _run("import edgesight, edgesight.edge.model.spec, edgesight.edge.model.preprocess, edgesight.cli; print('ok', edgesight.__version__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok 0.")


def test_cli_help_without_tensorflow():
    r = _run("from edgesight.cli import main; main(['--help'])")
    assert r.returncode == 0, r.stderr
    for cmd in ("train", "evaluate", "datasets"):
        assert cmd in r.stdout


def test_subcommand_help_without_tensorflow():
    r = _run("from edgesight.cli import main; main(['train', '--help'])")
    assert r.returncode == 0, r.stderr
    assert "--no-hflip" in r.stdout and "mobilenet_v3_small" in r.stdout


def test_training_needs_tensorflow_only_when_training(tmp_path):
    # Listing backbones and reading configs must not import TensorFlow either.
    r = _run("import edgesight.training.backbones as b, edgesight.training.config, edgesight.training.data; print(','.join(b.list_backbones()))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cnn_small,efficientnet_lite0,mobilenet_v2,mobilenet_v3_large,mobilenet_v3_small"
