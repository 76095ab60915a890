"""Options declared once: flags, --config files, profiles and the API from one dataclass."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgesight.edge import options
from edgesight.edge.errors import ConfigError
from edgesight.edge.loop.config import RunConfig
from tests.conftest import run_cli


def test_specs_read_type_default_and_range():
    s = options.spec(RunConfig, "threshold")
    assert (s.base, s.optional, s.default, s.opt.min, s.opt.max, s.flag) == (float, False, 0.0, 0.0, 1.0, "--threshold")
    g = options.spec(RunConfig, "gpio_on")
    assert g.multiple and g.base is str and g.default == ()
    assert options.spec(RunConfig, "threads").optional


def test_check_value_names_where_key_and_type():
    s = options.spec(RunConfig, "smooth")
    assert options.check_value(s, 3, "f.yaml") == 3
    with pytest.raises(ConfigError, match=r"^f.yaml: smooth should be an integer, got str '3'$"):
        options.check_value(s, "3", "f.yaml")
    with pytest.raises(ConfigError, match=r"^f.yaml: smooth must be at least 1, got 0$"):
        options.check_value(s, 0, "f.yaml")
    with pytest.raises(ConfigError, match="smooth should be an integer, got bool True"):
        options.check_value(s, True, "")
    t = options.spec(RunConfig, "threshold")
    assert options.check_value(t, 1, "") == 1.0 and isinstance(options.check_value(t, 1, ""), float)
    with pytest.raises(ConfigError, match="threshold should be a number, got nan"):
        options.check_value(t, float("nan"), "")


def test_from_mapping_refuses_unknown_keys_and_accepts_dashes():
    assert options.from_mapping(RunConfig, {"top-k": 2, "gpio_on": "reject"}, "x.yaml") == {"top_k": 2, "gpio_on": ("reject",)}
    with pytest.raises(ConfigError, match=r"^x.yaml: unknown key 'treshold'; valid keys are source, labels, "):
        options.from_mapping(RunConfig, {"treshold": 0.5}, "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml: expected a mapping of option: value, got list"):
        options.from_mapping(RunConfig, [1, 2], "x.yaml")


def test_to_args_round_trips_through_the_click_options():
    values = {"source": "picamera2", "threshold": 0.6, "smooth": 5, "headless": True, "quiet": False,
              "gpio": "17", "gpio_on": ("defect", "unknown"), "fps": 30.0, "roi": None}
    args = options.to_args(RunConfig, values)
    assert args == ["--source", "picamera2", "--threshold", "0.6", "--smooth", "5", "--headless",
                    "--gpio", "17", "--gpio-on", "defect", "--gpio-on", "unknown", "--fps", "30"]

    @click.command()
    @options.click_options(RunConfig)
    @click.pass_context
    def cmd(ctx, **_):
        click.echo(json.dumps(options.given(ctx, [s.name for s in options.specs(RunConfig)])))

    out = CliRunner().invoke(cmd, args, env={"EDGESIGHT_SOURCE": "", "EDGESIGHT_DEVICE": ""})
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {"source": "picamera2", "threshold": 0.6, "smooth": 5, "headless": True, "gpio": "17",
                                      "gpio_on": ["defect", "unknown"], "fps": 30.0}


def test_run_config_checks_in_python():
    with pytest.raises(ConfigError, match="hysteresis must be between 0 and 1, got 1.5"):
        RunConfig(hysteresis=1.5)
    with pytest.raises(ConfigError, match="--gpio-on needs --gpio PIN"):
        RunConfig(gpio_on=("x",))
    with pytest.raises(ConfigError, match=r"^--gpio 17: name the label\(s\) that pulse the pin with --gpio-on LABEL"):
        RunConfig(gpio="17")
    with pytest.raises(Exception, match="--roi '5,5': expected x,y,w,h"):
        RunConfig(roi="5,5")
    assert RunConfig(roi=(1, 2, 3, 4)).roi_box == (1, 2, 3, 4)
    assert RunConfig(threshold=0.6, smooth=3).changed() == {"threshold": 0.6, "smooth": 3}


def test_run_config_file_and_flags(color_bundle, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("source: synthetic:64x48@100\nmax_frames: 4\nstats_interval: 0\nthreshold: 0.3\njsonl: from-file.jsonl\n")
    code, out, err = run_cli(["run", color_bundle, "--config", cfg, "--jsonl", tmp_path / "flag.jsonl", "-q"], capsys)
    assert code == 0, err
    # the file sets the source and the limit; the flag wins over the file's jsonl
    assert len((tmp_path / "flag.jsonl").read_text().splitlines()) == 4
    assert not (tmp_path / "from-file.jsonl").exists() and "4 frames" in out


@pytest.mark.parametrize("text,message", [
    ("treshold: 0.5\n", "run.yaml: unknown key 'treshold'; valid keys are source, labels, device, "),
    ("smooth: five\n", "run.yaml: smooth should be an integer, got str 'five'"),
    ("threshold: 2\n", "run.yaml: threshold must be between 0 and 1, got 2"),
    ("gpio_on: [reject]\n", "--gpio-on needs --gpio PIN"),
    ("- 1\n", "run.yaml: expected a mapping of option: value, got list"),
    ("a: [1\n", "run.yaml: not valid YAML"),
])
def test_run_config_errors_name_file_key_and_type(color_bundle, tmp_path, capsys, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    code, out, err = run_cli(["run", color_bundle, "--config", cfg, "--source", "synthetic", "--max-frames", "1"], capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_run_flag_ranges_are_refused_before_anything_runs(color_bundle, tmp_path, capsys):
    code, out, err = run_cli(["run", color_bundle, "--source", "synthetic", "--threshold", "2", "--jsonl", tmp_path / "e.jsonl"], capsys)
    assert code == 2 and "--threshold" in err and "0<=x<=1" in err
    assert not (tmp_path / "e.jsonl").exists()
    code, out, err = run_cli(["run", color_bundle, "--source", "synthetic", "--threads", "0"], capsys)
    assert code == 2 and "--threads" in err and "x>=1" in err


def test_convert_config_errors_name_file_and_key(trained_run, tmp_path, capsys):
    cfg = tmp_path / "convert.yaml"
    cfg.write_text("quant: int4\n")
    code, out, err = run_cli(["convert", trained_run, "-o", tmp_path / "b", "--config", cfg], capsys)
    assert code == 1 and "convert.yaml: quant: 'int4' is not one of int8, float16, dynamic, float32" in err
    cfg.write_text("num_calib: many\n")
    code, out, err = run_cli(["convert", trained_run, "-o", tmp_path / "b", "--config", cfg], capsys)
    assert code == 1 and "convert.yaml: num_calib should be an integer, got str 'many'" in err
    cfg.write_text("labels: missing.txt\n")
    code, out, err = run_cli(["convert", trained_run, "-o", tmp_path / "b", "--config", cfg], capsys)
    assert code == 1 and "convert.yaml: labels: 'missing.txt' does not exist" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_convert_config_file_is_used(trained_run, tmp_path, capsys):
    cfg = tmp_path / "convert.yaml"
    cfg.write_text("quant: float16\nmax_drop: 5\n")
    code, out, err = run_cli(["convert", trained_run, "-o", tmp_path / "b", "--config", cfg], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "b" / "conversion_report.json").read_text())
    assert report["mode"] == "float16" and report["max_drop_pp"] == 5.0
