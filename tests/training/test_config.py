import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.config import TrainConfig


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(data="d", out="o", model="mobilenet_v2", img_size=96, hflip=False, augment="strong", learning_rate=3e-4)
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_unknown_key_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'learning_rat'; valid keys are data, out, model, .*learning_rate"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


def test_wrong_type_and_value(tmp_path):
    (tmp_path / "t.yaml").write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match="t.yaml: epochs should be an integer or null, got str 'ten'"):
        TrainConfig.from_yaml(tmp_path / "t.yaml")
    (tmp_path / "v.yaml").write_text("augment: extreme\n")
    with pytest.raises(ConfigError, match="augment: 'extreme' is not one of auto, none, light, standard, strong, robust"):
        TrainConfig.from_yaml(tmp_path / "v.yaml")
    (tmp_path / "y.yaml").write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="y.yaml: not valid YAML"):
        TrainConfig.from_yaml(tmp_path / "y.yaml")


def test_dash_keys_and_input_size():
    cfg = TrainConfig.from_mapping({"img-size": 48, "batch-size": 4})
    assert cfg.input_size(224) == (48, 48) and cfg.batch_size == 4
    assert TrainConfig(img_height=30, img_width=40).input_size(64) == (30, 40)
    assert TrainConfig().input_size(64) == (64, 64)


def test_config_is_frozen():
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.updated(epochs=3).epochs == 3 and cfg.epochs is None  # 20 (5 with --init-from) when training starts


def test_ranges_are_checked_in_files_and_in_python(tmp_path):
    (tmp_path / "r.yaml").write_text("dropout: 1.5\n")
    with pytest.raises(ConfigError, match=r"r.yaml: dropout must be between 0 and 0.99, got 1.5"):
        TrainConfig.from_yaml(tmp_path / "r.yaml")
    with pytest.raises(ConfigError, match="epochs must be at least 1, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="learning_rate must be greater than 0, got -0.1"):
        TrainConfig(learning_rate=-0.1)


def test_yaml_exponents_are_numbers_and_overwrite_is_not_saved(tmp_path):
    (tmp_path / "e.yaml").write_text("learning_rate: 1e-3\nfine_tune_lr: 5E-6\n")
    cfg = TrainConfig.from_yaml(tmp_path / "e.yaml")
    assert cfg.learning_rate == 1e-3 and cfg.fine_tune_lr == 5e-6
    TrainConfig(overwrite=True, img_height=24, img_width=24).save(tmp_path / "c.yaml")
    assert "overwrite" not in (tmp_path / "c.yaml").read_text()


def test_a_flag_wins_over_a_saved_config(tmp_path):
    import click
    from click.testing import CliRunner

    from edgesight.edge import options

    TrainConfig(img_height=24, img_width=24, epochs=3, hflip=True).save(tmp_path / "c.yaml")

    @click.command()
    @options.click_options(TrainConfig)
    @click.pass_context
    def cmd(ctx, **_):
        cfg = options.build(TrainConfig, ctx, tmp_path / "c.yaml", adjust=TrainConfig.size_given)
        click.echo(f"{cfg.input_size(64)} {cfg.epochs} {cfg.hflip}")

    r = CliRunner().invoke(cmd, ["--img-size", "32", "--no-hflip"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "(32, 32) 3 False"
