"""Click commands of the training side: ``train``, ``evaluate``, ``datasets``.

Each body is a few lines calling library functions; TensorFlow loads only inside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
from click.core import ParameterSource

from edgesight.edge.errors import ConfigError

# CLI option name -> TrainConfig field, for options that map one to one.
_TRAIN_OPTIONS = {
    "out": "out",
    "model": "model",
    "img_size": "img_size",
    "color": "color",
    "resize": "resize",
    "interpolation": "interpolation",
    "weights": "weights",
    "alpha": "alpha",
    "dropout": "dropout",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "label_smoothing": "label_smoothing",
    "class_weights": "class_weights",
    "augment": "augment",
    "hflip": "hflip",
    "early_stopping": "early_stopping",
    "time_limit": "time_limit",
    "fine_tune_layers": "fine_tune_layers",
    "fine_tune_epochs": "fine_tune_epochs",
    "fine_tune_lr": "fine_tune_lr",
    "val_split": "val_split",
    "test_split": "test_split",
    "seed": "seed",
    "deterministic": "deterministic",
    "strategy": "strategy",
    "cache": "cache",
    "overwrite": "overwrite",
}


def _backbone_names():
    from .backbones import list_backbones

    return list_backbones()


@click.command()
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YAML file of options (same names as the flags, with underscores); flags given on the command line win.")
@click.option("--out", "-o", default="runs/train", show_default=True, help="Run folder to create.")
@click.option("--model", default="cnn_small", show_default=True, type=click.Choice(_backbone_names()), help="Backbone.")
@click.option("--img-size", type=int, help="Square input side in pixels (default: the backbone's; 64 for cnn_small, 224 otherwise).")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]), default="rgb", show_default=True)
@click.option("--resize", type=click.Choice(["stretch", "crop", "pad"]), default="stretch", show_default=True, help="How images of another aspect ratio are fitted.")
@click.option("--interpolation", type=click.Choice(["area", "bilinear", "nearest", "bicubic"]), default="bilinear", show_default=True)
@click.option("--weights", help="imagenet, none, or a path to a local weights file (default: imagenet for pretrained backbones).")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier.")
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate (Adam).")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--class-weights", type=click.Choice(["none", "auto"]), default="none", show_default=True, help="auto: weigh classes by inverse frequency (imbalanced data).")
@click.option("--augment", type=click.Choice(["none", "light", "standard", "strong"]), default="standard", show_default=True)
@click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flips; turn off when a mirror image is another class (traffic signs, text).")
@click.option("--early-stopping", type=int, default=5, show_default=True, help="Patience in epochs (0 disables).")
@click.option("--time-limit", type=float, default=0.0, show_default=True, help="Seconds of training at most (0: none): no epoch is started that would end past it; the best epoch is kept.")
@click.option("--fine-tune-layers", type=int, default=0, show_default=True, help="Top backbone layers unfrozen in phase 2 (0: all).")
@click.option("--fine-tune-epochs", type=int, default=0, show_default=True, help="Epochs of phase 2 (fine-tuning) for pretrained backbones.")
@click.option("--fine-tune-lr", type=float, default=1e-5, show_default=True)
@click.option("--val-split", type=float, default=0.1, show_default=True)
@click.option("--test-split", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--deterministic", is_flag=True, help="Deterministic TensorFlow ops (bit-identical reruns, slower).")
@click.option("--strategy", type=click.Choice(["none", "mirrored", "multiworker"]), default="none", show_default=True, help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--cache", type=click.Choice(["memory", "disk", "none"]), default="memory", show_default=True, help="Where decoded images are cached between epochs.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.pass_context
def train(ctx: click.Context, data: Optional[Path], config_path: Optional[Path], **opts) -> None:
    """Train a classifier on DATA: a folder of class sub-folders (optionally under
    train/ val/ test/) or a CSV manifest of path,label rows."""
    from .config import TrainConfig
    from .train import run_train

    cfg = TrainConfig.from_yaml(config_path) if config_path else TrainConfig()
    changes = {}
    for opt, field_name in _TRAIN_OPTIONS.items():
        if config_path is None or ctx.get_parameter_source(opt) != ParameterSource.DEFAULT:
            changes[field_name] = opts[opt]
    if data is not None:
        changes["data"] = str(data)
    cfg = cfg.updated(**changes)
    if not cfg.data:
        raise ConfigError("no training data: give DATA or 'data:' in --config")
    run_train(cfg)


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=click.Choice(["auto", "train", "val", "test", "all"]), default="auto", show_default=True, help="auto: the test/ split of a pre-split folder (or of the run's split.json when DATA is omitted), else every image.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="labels.txt for a bare .keras or .tflite file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the confusion matrix as PNG.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--trust-model", is_flag=True, help="Allow Lambda/custom layers, which run code from the model file.")
def evaluate(model: Path, data: Optional[Path], split: str, labels: Optional[Path], json_out: Optional[Path], plot: Optional[Path], batch_size: int, trust_model: bool) -> None:
    """Measure MODEL (a run folder, .keras file, model bundle or .tflite file) on DATA (a dataset
    folder or CSV; default: the run's own test split)."""
    from edgesight.edge.fsutil import write_json
    from .metrics import format_report
    from .data import format_skipped
    from .evaluate import is_tflite_source, load_model_source, report_for, samples_to_evaluate

    if is_tflite_source(model):
        from edgesight.edge.model.bundle import labels_arg, load_bundle

        bundle = load_bundle(model, labels_arg(labels))
        keras_model, info = bundle.model_path, bundle.info
        run_dir = Path(info.source["run"]) if info.source.get("run") and data is None else None
    else:
        keras_model, info, run_dir = load_model_source(model, labels, trust_model)
    if data is None:
        if run_dir is None:
            raise ConfigError(f"{model}: a bare model file needs DATA to evaluate on")
        data = run_dir
    samples, used, skipped = samples_to_evaluate(data, split)
    if skipped:
        click.echo(format_skipped(skipped))
    report = report_for(keras_model, info, samples, batch_size)
    report["split"] = used
    report["data"] = str(data)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report)
    if plot:
        from .plots import plot_confusion_matrix

        plot_confusion_matrix(report["confusion_matrix"], info.labels, plot, title=f"{Path(data).name} ({used})")


@click.group()
def datasets() -> None:
    """Generate sample datasets and check dataset folders."""


@datasets.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["shapes", "traffic-signs"]), default="shapes", show_default=True, help="traffic-signs: train with --no-hflip, turn_left is turn_right mirrored.")
@click.option("--per-class", type=int, default=60, show_default=True, help="Images per class.")
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--video", type=click.Path(dir_okay=False, path_type=Path), help="Also write a dashcam video (.mp4) driving past the traffic signs, with its timeline as <stem>.json.")
@click.option("--video-seconds", type=float, default=20.0, show_default=True, help="Length of --video; 2 s per sign, 20 s shows every class.")
def synth(out: Path, kind: str, per_class: int, size: int, seed: int, video: Optional[Path], video_seconds: float) -> None:
    """Write a generated dataset (class sub-folders of PNGs) to OUT."""
    if video is not None and kind != "traffic-signs":
        raise ConfigError("--video shows traffic signs: add --kind traffic-signs")
    if kind == "traffic-signs":
        from .signs import make_drive_video, write_signs

        counts = write_signs(out, per_class=per_class, size=size, seed=seed)
    else:
        from .synth import write_shapes

        counts = write_shapes(out, per_class=per_class, size=size, seed=seed)
    click.echo(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out}")
    if video is not None:
        timeline = make_drive_video(video, seconds=video_seconds, seed=seed)
        click.echo(f"wrote {video} ({len(timeline)} signs) and its timeline {video.with_suffix('.json')}")


@datasets.command("inspect")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--val-split", type=float, default=0.1, show_default=True)
@click.option("--test-split", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
def inspect(data: Path, val_split: float, test_split: float, seed: int) -> None:
    """Check every image of DATA and show the split training would use."""
    from .data import format_skipped, make_split, scan_dataset

    split = make_split(scan_dataset(data), val_split, test_split, seed)
    counts = split.counts()
    width = max(len("class"), *(len(c) for c in split.classes))
    click.echo(f"{data}: {split.layout} layout, {len(split.classes)} classes")
    click.echo(f"{'class':<{width}}  {'train':>6} {'val':>6} {'test':>6}")
    for c in split.classes:
        click.echo(f"{c:<{width}}  {counts['train'][c]:>6} {counts['val'][c]:>6} {counts['test'][c]:>6}")
    click.echo(f"{'total':<{width}}  {len(split.train):>6} {len(split.val):>6} {len(split.test):>6}")
    if split.skipped:
        click.echo(format_skipped(split.skipped))
