import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.config import TrainConfig


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(data="d", out="o", model="mobilenet_v2", img_size=96, hflip=False, augment="strong", learning_rate=3e-4)
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_unknown_key_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key\(s\) learning_rat; valid keys are"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


def test_wrong_type_and_value(tmp_path):
    (tmp_path / "t.yaml").write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match="t.yaml: epochs should be int, got str 'ten'"):
        TrainConfig.from_yaml(tmp_path / "t.yaml")
    (tmp_path / "v.yaml").write_text("augment: extreme\n")
    with pytest.raises(ConfigError, match="augment: 'extreme' is not one of none, light, standard, strong"):
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
    assert cfg.updated(epochs=3).epochs == 3 and cfg.epochs == 20
