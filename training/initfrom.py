"""``edgesight train DATA --init-from RUN``: continue from an earlier run's weights.

After new images were captured, reviewed and merged, a retrain starts from the model that is
already deployed instead of from ImageNet (or random) weights, so a few epochs do. The earlier
run must have the same backbone, width multiplier, input size and colour mode; options not
given are taken from its ``config.yaml`` (:func:`inherit`). Its classes are matched by name:
the same classes load every weight; new classes (added by ``datasets merge --new-classes``)
get fresh rows of the classifier head while every known class keeps its row, whatever the
order; classes the data no longer has are dropped from the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from edgesight.edge.errors import ConfigError
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, read_model_info

# Options of the earlier run that a continuation takes unless they are given.
INHERITED = ("model", "weights", "img_height", "img_width", "color", "resize", "interpolation", "alpha", "pooling")
SIZE_KEYS = ("img_size", "img_height", "img_width")


@dataclass(frozen=True)
class InitFrom:
    """What training starts from: the run folder, its model file and its description."""

    run: Path
    model_path: Path
    info: ModelInfo


def open_run(run: Any) -> InitFrom:
    """The run folder ``run`` as a starting point.

    Raises:
        ConfigError: not a run folder with ``model.keras`` and ``model.json``.
    """
    path = Path(run)
    if not path.is_dir() or not (path / "model.keras").is_file():
        raise ConfigError(f"--init-from {run}: not a run folder with a model.keras; give a folder written by 'edgesight train'")
    try:
        info = read_model_info(path)
    except Exception as e:  # BundleError: a one-line reason to pass on
        raise ConfigError(f"--init-from {run}: {e}") from e
    return InitFrom(path, path / "model.keras", info)


def inherit(values: Dict[str, Any]) -> Dict[str, Any]:
    """``values`` (a train config being built) with the options of the ``init_from`` run that
    it does not set: backbone, weights, input size, colour, resize, interpolation, width multiplier, pooling."""
    if not values.get("init_from"):
        return values
    import yaml

    start = open_run(values["init_from"])
    try:
        old = yaml.safe_load((start.run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        old = {}
    spec = start.info.preprocess
    old = {**old, "model": old.get("model", start.info.backbone), "img_height": spec.height, "img_width": spec.width,
           "color": spec.color, "resize": spec.resize, "interpolation": spec.interpolation}
    sized = any(values.get(k) is not None for k in SIZE_KEYS)
    for key in INHERITED:
        if key in values or (key in SIZE_KEYS and sized) or old.get(key) is None:
            continue
        values[key] = old[key]
    return values


def check_fits(start: InitFrom, backbone: str, spec: PreprocessSpec) -> None:
    """Refuse a starting run whose model cannot carry its weights over to this one.

    Raises:
        ConfigError: another backbone, input size or colour mode; the message names both and
            the fix.
    """
    old = start.info.preprocess
    if start.info.backbone != backbone:
        raise ConfigError(f"--init-from {start.run}: that run's backbone is {start.info.backbone}, not {backbone}; "
                          f"give --model {start.info.backbone} or train without --init-from")
    if (old.height, old.width, old.color) != (spec.height, spec.width, spec.color):
        raise ConfigError(f"--init-from {start.run}: that run's input is {old.height}x{old.width} {old.color}, not "
                          f"{spec.height}x{spec.width} {spec.color}; give --img-size {old.height} --color {old.color} "
                          "(or leave them out) or train without --init-from")


def load_weights(core: Any, start: InitFrom, classes: Sequence[str]) -> Dict[str, List[str]]:
    """Put the weights of ``start`` into ``core`` (built by ``build_classifier`` for ``classes``).

    Every layer but the classifier head takes the earlier weights as they are; the head's rows
    (kernel columns and biases) are copied by class name, new classes keep their fresh
    initialisation.

    Returns:
        ``{"kept": [...], "new": [...], "dropped": [...]}`` class names.

    Raises:
        ConfigError: the earlier model's layers do not fit (another width multiplier).
    """
    from .evaluate import load_keras_model

    old = load_keras_model(start.model_path)
    mine, theirs = _body(core), _body(old)
    shapes = [[w.shape for w in layer.get_weights()] for layer in mine]
    if shapes != [[w.shape for w in layer.get_weights()] for layer in theirs]:
        raise ConfigError(f"--init-from {start.run}: its layers do not fit this model (another --alpha or backbone version); "
                          f"train with the options in {start.run / 'config.yaml'} or without --init-from")
    for layer, source in zip(mine, theirs):
        layer.set_weights(source.get_weights())
    kernel, bias = core.get_layer("predictions").get_weights()
    old_kernel, old_bias = old.get_layer("predictions").get_weights()
    if old_kernel.shape[0] != kernel.shape[0]:
        raise ConfigError(f"--init-from {start.run}: its features ({old_kernel.shape[0]}) do not fit this model's "
                          f"({kernel.shape[0]}); train with the options in {start.run / 'config.yaml'}")
    index = {name: i for i, name in enumerate(start.info.labels)}
    kept, new = [], []
    for i, name in enumerate(classes):
        j = index.get(name)
        if j is None:
            new.append(name)
            continue
        kernel[:, i], bias[i] = old_kernel[:, j], old_bias[j]
        kept.append(name)
    core.get_layer("predictions").set_weights([kernel, bias])
    dropped = [name for name in start.info.labels if name not in set(classes)]
    return {"kept": kept, "new": new, "dropped": dropped}


def _body(model: Any) -> List[Any]:
    """The layers of ``model`` that hold weights, the classifier head left out, in order."""
    return [layer for layer in model.layers if layer.weights and layer.name != "predictions"]


def describe(start: InitFrom, mapping: Mapping[str, List[str]]) -> str:
    """One line saying what the new model starts from."""
    parts = [f"{len(mapping['kept'])} classes kept"]
    if mapping["new"]:
        parts.append(f"new: {', '.join(mapping['new'])}")
    if mapping["dropped"]:
        parts.append(f"dropped: {', '.join(mapping['dropped'])}")
    return f"starting from the weights of {start.run} ({'; '.join(parts)})"

