"""``TrainConfig``: every training option, loadable from YAML and saved into the run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import yaml

from edgesight.edge.errors import ConfigError
from edgesight.edge.fsutil import write_text
from edgesight.edge.model.spec import COLORS, INTERPOLATIONS, RESIZE_MODES

AUGMENT_PRESETS = ("none", "light", "standard", "strong")
STRATEGIES = ("none", "mirrored", "multiworker")
CACHE_MODES = ("memory", "disk", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edgesight train``. Field names match the ``--config`` YAML keys.

    ``img_size`` and ``weights`` may be left ``None`` to use the backbone's defaults.
    """

    data: str = ""
    out: str = "runs/train"
    model: str = "cnn_small"
    img_size: Optional[int] = None
    img_height: Optional[int] = None
    img_width: Optional[int] = None
    color: str = "rgb"
    resize: str = "stretch"
    interpolation: str = "bilinear"
    weights: Optional[str] = None
    alpha: float = 1.0
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    label_smoothing: float = 0.1
    class_weights: str = "none"
    augment: str = "standard"
    hflip: bool = True
    early_stopping: int = 5
    time_limit: float = 0.0
    reduce_lr_patience: int = 3
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 1e-5
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 42
    deterministic: bool = False
    strategy: str = "none"
    cache: str = "memory"
    overwrite: bool = False

    def __post_init__(self) -> None:
        choices = {
            "color": COLORS,
            "resize": RESIZE_MODES,
            "interpolation": INTERPOLATIONS,
            "augment": AUGMENT_PRESETS,
            "class_weights": ("none", "auto"),
            "strategy": STRATEGIES,
            "cache": CACHE_MODES,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: '{getattr(self, key)}' is not one of {', '.join(allowed)}")
        positive = ("epochs", "batch_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        for key in ("learning_rate", "fine_tune_lr", "alpha"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.fine_tune_layers < 0 or self.fine_tune_epochs < 0:
            raise ConfigError("fine_tune_layers and fine_tune_epochs cannot be negative")
        if not self.time_limit >= 0:
            raise ConfigError(f"time_limit must be 0 (none) or a number of seconds, got {self.time_limit}")

    def input_size(self, default: int) -> tuple:
        """(height, width) from ``img_size`` or ``img_height``/``img_width``, else ``default``."""
        h = self.img_height or self.img_size or default
        w = self.img_width or self.img_size or default
        return int(h), int(w)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        write_text(path, self.to_yaml())

    def updated(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], where: str = "config") -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        norm = {str(k).replace("-", "_"): v for k, v in d.items()}
        unknown = sorted(set(norm) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(known)}")
        _check_types(norm, where)
        try:
            return cls(**norm)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from e

    @classmethod
    def from_yaml(cls, path: Path) -> "TrainConfig":
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping of option: value")
        return cls.from_mapping(d, where=str(path))


def _check_types(values: Mapping[str, Any], where: str) -> None:
    """YAML gives ints where floats are meant (fine) and strings where numbers are (not)."""
    for f in fields(TrainConfig):
        if f.name not in values:
            continue
        v = values[f.name]
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        optional = t.startswith("Optional[")
        base = t[len("Optional[") : -1] if optional else t
        if v is None:
            if not optional:
                raise ConfigError(f"{where}: {f.name} cannot be empty")
            continue
        ok = {
            "str": isinstance(v, str),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "float": isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": isinstance(v, bool),
        }.get(base, True)
        if not ok:
            raise ConfigError(f"{where}: {f.name} should be {base}, got {type(v).__name__} {v!r}")
