"""What ``edgesight profiles show`` prints loads back unchanged, for every shipped profile and preset."""

import pytest

from tests.conftest import run_cli

from edgesight.edge.fleet.profiles import list_presets, list_profiles

CASES = [(p, None) for p in list_profiles()] + [(p, u) for p in list_profiles() for u in list_presets()]


@pytest.mark.parametrize("profile,preset", CASES)
def test_show_output_loads_back_unchanged(tmp_path, capsys, profile, preset):
    code, shown, err = run_cli(["profiles", "show", profile] + (["--preset", preset] if preset else []), capsys)
    assert code == 0, err
    path = tmp_path / "mine.yaml"
    path.write_text(shown)
    code, again, err = run_cli(["profiles", "show", path], capsys)
    assert code == 0 and err == "", err
    assert again == shown


def test_a_shown_use_case_is_not_applied_twice(tmp_path, capsys):
    _, shown, _ = run_cli(["profiles", "show", "rpi5", "--preset", "qc-line"], capsys)
    (tmp_path / "mine.yaml").write_text(shown)
    code, _, err = run_cli(["profiles", "show", tmp_path / "mine.yaml", "--preset", "drone"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "already applied" in err and "Traceback" not in err


def test_edited_derived_run_args_are_refused(tmp_path, capsys):
    _, shown, _ = run_cli(["profiles", "show", "rpi5"], capsys)
    (tmp_path / "mine.yaml").write_text(shown.replace("- picamera2", "- synthetic", 1).replace("source: picamera2", "source: picamera2"))
    code, _, err = run_cli(["profiles", "show", tmp_path / "mine.yaml"], capsys)
    assert code == 1 and "run_args does not match" in err and len(err.strip().splitlines()) == 1
