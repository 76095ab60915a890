"""The Python API of training: ``edgesight.train`` and its typed result.

``edgesight train`` calls the same :func:`~edgesight.training.train.run_train` with the same
:class:`~edgesight.training.config.TrainConfig`; this adds keyword arguments and a typed result.
TensorFlow is imported only when ``train`` runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from edgesight.edge import options as _options

from .config import TrainConfig

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class on an evaluation split."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """A classification report (``metrics.json`` of a run, ``edgesight evaluate --json``)."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    num_samples: int
    labels: Tuple[str, ...]
    confusion_matrix: Tuple[Tuple[int, ...], ...]
    per_class: Dict[str, ClassMetrics]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metrics":
        return cls(
            accuracy=float(d["accuracy"]),
            precision_macro=float(d["precision_macro"]),
            recall_macro=float(d["recall_macro"]),
            f1_macro=float(d["f1_macro"]),
            num_samples=int(d["num_samples"]),
            labels=tuple(d["labels"]),
            confusion_matrix=tuple(tuple(int(v) for v in row) for row in d["confusion_matrix"]),
            per_class={k: ClassMetrics(float(v["precision"]), float(v["recall"]), float(v["f1"]), int(v["support"]))
                       for k, v in d["per_class"].items()},
        )


@dataclass(frozen=True)
class TrainedRun:
    """What ``train`` made: a run folder, usable wherever a path is (``convert(run)``).

    Attributes:
        path: the run folder.
        model_path: its ``model.keras``.
        labels: class names in output order.
        metrics: the report on the test split (or validation split when there is no test split).
        history: loss and accuracy per epoch.
        interrupted: training stopped early (Ctrl-C, SIGTERM or the time limit); the best
            epoch so far was kept.
        seconds: wall time.
        config: the resolved options.
    """

    path: Path
    model_path: Path
    labels: Tuple[str, ...]
    metrics: Metrics
    history: Dict[str, List[float]]
    interrupted: bool
    seconds: float
    config: TrainConfig

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        """A file of the run: ``run / "metrics.json"``."""
        return self.path / name


def train(data: PathLike, out: Optional[PathLike] = None, *, config: Optional[PathLike] = None,
          progress: bool = True, **opts: Any) -> TrainedRun:
    """Train a classifier on a folder of labelled images (needs the ``train`` extra).

    Args:
        data: class folders (optionally under ``train/ val/ test/``) or a CSV of path,label rows.
        out: the run folder to create (default: the config file's ``out``, else ``runs/train``).
        config: a YAML file of options, as ``edgesight train --config``; keywords win over it.
        progress: show progress bars.
        **opts: any ``edgesight train`` option by field name (``model``, ``epochs``,
            ``img_size``, ``learning_rate``, ``augment``, ``hflip``, ``time_limit``...; see
            :class:`~edgesight.training.config.TrainConfig`).

    Returns:
        The run, with its test metrics.

    Raises:
        ConfigError: an unknown option or a value of the wrong type or range.
        DatasetError: unusable data.
    """
    from .train import run_train

    values = _options.load_file(TrainConfig, config) if config else {}
    given = _options.from_mapping(TrainConfig, {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in opts.items()}, "train()")
    values.update(given)
    values.update(data=os.fspath(data), **({"out": os.fspath(out)} if out is not None else {}))
    values = TrainConfig.adjust(values, given)
    cfg = _options.make(TrainConfig, values, str(config) if config else "")
    res = run_train(cfg, progress=progress)
    return TrainedRun(
        path=Path(res.run_dir), model_path=Path(res.run_dir) / "model.keras",
        labels=tuple(res.metrics["labels"]), metrics=Metrics.from_dict(res.metrics), history=res.history,
        interrupted=res.interrupted, seconds=res.seconds, config=cfg,
    )
