"""Mistakes answered in one line that names what was given and the fix."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("threads", ["0", "-3", "1,0"])
def test_benchmark_threads_below_one_blames_the_flag_not_the_model(color_bundle, tmp_path, capsys, threads):
    code, out, err = run_cli(["benchmark", color_bundle, f"--threads={threads}", "--runs", "2", "--warmup", "0",
                              "--json", tmp_path / "b.json"], capsys)
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"error: --threads must be at least 1, got '{threads}'"]
    assert not (tmp_path / "b.json").exists()


def test_classify_a_missing_folder_names_it(color_bundle, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code, out, err = run_cli(["classify", color_bundle, missing], capsys)
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (f"error: no images to classify in {missing}; "
                                           "give image files, folders or glob patterns")


def test_random_bytes_keras_file_is_not_a_keras_model(tmp_path, capsys):
    import os

    bad = tmp_path / "random.keras"
    bad.write_bytes(os.urandom(4096))
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for cmd in (["evaluate", bad, data], ["convert", bad, "--out", tmp_path / "out"]):
        code, out, err = run_cli(cmd, capsys)
        assert code == 1, err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"error: {bad}: not a Keras model") and "File not found" not in line, line
    assert not (tmp_path / "out").exists()
