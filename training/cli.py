"""Click commands of the training side: ``train``, ``evaluate``, ``datasets``.

Each body is a few lines calling library functions; TensorFlow loads only inside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgesight.edge import options
from edgesight.edge.errors import ConfigError

def _train_config_options(f):
    from .config import TrainConfig

    return options.click_options(TrainConfig)(f)


@click.command()
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of options (keys: the flags' names with underscores, e.g. learning_rate); flags given on the command line win.")
@_train_config_options
@click.pass_context
def train(ctx: click.Context, data: Optional[Path], config_path: Optional[Path], **_: object) -> None:
    """Train a classifier on DATA: a folder of class sub-folders (optionally under
    train/ val/ test/) or a CSV manifest of path,label rows."""
    from .config import TrainConfig
    from .train import run_train

    cfg = options.build(TrainConfig, ctx, config_path, adjust=TrainConfig.adjust, data=str(data) if data is not None else None)
    if not cfg.data:
        raise ConfigError("no training data: give DATA or 'data:' in --config")
    run_train(cfg)


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=click.Choice(["auto", "train", "val", "test", "all"]), default="auto", show_default=True, help="auto: the test/ split of a pre-split folder (or of the run's split.json when DATA is omitted), else every image.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="labels.txt for a bare .keras or .tflite file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the confusion matrix as PNG (an anomaly detector: the ROC curves; default anomaly_roc.png in the run folder, else the current folder).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--trust-model", is_flag=True, help="Allow Lambda/custom layers, which run code from the model file.")
@click.option("--robustness", is_flag=True, help="Report accuracy under noise, blur, dark/bright, contrast, JPEG, haze, rotation, occlusion and low resolution at 5 severities; --json/--plot receive it (default: robustness.json/.png in the run folder, else the current folder).")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, path_type=Path), help="With --robustness: the model's TFLite bundle (or .tflite), evaluated beside the float model.")
@click.option("--corruptions", metavar="NAMES", help="With --robustness: a comma-separated subset of the corruptions (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="With --robustness: seed of the random parts of the corruptions.")
def evaluate(model: Path, data: Optional[Path], split: str, labels: Optional[Path], json_out: Optional[Path], plot: Optional[Path], batch_size: int, trust_model: bool,
             robustness: bool, bundle_path: Optional[Path], corruptions: Optional[str], seed: int) -> None:
    """Measure MODEL (a run folder, .keras file, model bundle or .tflite file) on DATA (a dataset
    folder or CSV; default: the run's own test split)."""
    if (bundle_path or corruptions) and not robustness:
        raise ConfigError("--bundle and --corruptions belong to the robustness report: add --robustness")
    from edgesight.edge.fsutil import write_json
    from .metrics import format_report
    from .corruptions import select
    from .data import format_skipped
    from .evaluate import is_tflite_source, load_model_source, report_for, samples_to_evaluate

    from .anomaly_eval import anomaly_info, evaluate_anomaly

    detector_info = anomaly_info(model)
    if detector_info is not None:
        if robustness:
            raise ConfigError("--robustness measures classifiers; for an anomaly detector evaluate DATA with good/ and defect folders")
        evaluate_anomaly(model, data, json_out, plot, detector_info)
        return
    names = select(corruptions) if robustness else []

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
    if robustness:
        from .robustness import contenders_for, default_outputs, format_robustness, robustness_report, save_robustness

        models = contenders_for(keras_model, info, model, bundle_path, labels, batch_size)
        rob = {"data": str(data), "split": used, **robustness_report(models, info.labels, samples, names, seed)}
        click.echo(format_robustness(rob))
        default_json, default_plot = default_outputs(model if model.is_dir() and not is_tflite_source(model) else None)
        for path in save_robustness(rob, json_out or default_json, plot or default_plot, title=f"{Path(data).name} ({used})"):
            click.echo(f"wrote {path}")
        return
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
    """Generate sample datasets, check dataset folders and add captured frames to them."""


@datasets.command("synth")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["shapes", "traffic-signs", "qc-parts"]), default="shapes", show_default=True,
              help="traffic-signs: train with --no-hflip, turn_left is turn_right mirrored. qc-parts: good parts in train/, good and defective ones in val/ and test/, for --task anomaly.")
@click.option("--part", type=click.Choice(["machined", "pcb"]), default="pcb", show_default=True, help="With --kind qc-parts: a turned metal flange or a circuit board.")
@click.option("--per-class", type=int, default=60, show_default=True, help="Images per class (qc-parts: good training images).")
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels (qc-parts: 224 unless given).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--video", type=click.Path(dir_okay=False, path_type=Path), help="Also write a dashcam video (.mp4) driving past the traffic signs, with its timeline as <stem>.json.")
@click.option("--video-seconds", type=float, default=20.0, show_default=True, help="Length of --video; 2 s per sign, 20 s shows every class.")
@click.option("--dusk", is_flag=True, help="Drive --video at dusk: the same road and signs as the daylight video of this --seed, darker, bluer and noisier.")
@click.pass_context
def synth(ctx: click.Context, out: Path, kind: str, part: str, per_class: int, size: int, seed: int, video: Optional[Path], video_seconds: float, dusk: bool) -> None:
    """Write a generated dataset (class sub-folders of PNGs) to OUT."""
    from click.core import ParameterSource

    if video is not None and kind != "traffic-signs":
        raise ConfigError("--video shows traffic signs: add --kind traffic-signs")
    if dusk and video is None:
        raise ConfigError("--dusk is the lighting of the drive video: add --video FILE.mp4")
    if kind != "qc-parts" and ctx.get_parameter_source("part") is not ParameterSource.DEFAULT:
        raise ConfigError("--part chooses the part of the QC-parts dataset: add --kind qc-parts")
    if kind == "qc-parts":
        _synth_qc_parts(out, part, per_class, 224 if ctx.get_parameter_source("size") is ParameterSource.DEFAULT else size, seed)
        return
    if kind == "traffic-signs":
        from .synth import make_drive_video, write_signs

        counts = write_signs(out, per_class=per_class, size=size, seed=seed)
    else:
        from .synth import write_shapes

        counts = write_shapes(out, per_class=per_class, size=size, seed=seed)
    click.echo(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out}")
    if video is not None:
        timeline = make_drive_video(video, seconds=video_seconds, seed=seed, dusk=dusk)
        click.echo(f"wrote {video} ({len(timeline)} signs) and its timeline {video.with_suffix('.json')}")


def _synth_qc_parts(out: Path, part: str, good: int, size: int, seed: int) -> None:
    from .synth import write_qc_parts

    counts = write_qc_parts(out, kind=part, good=good, size=size, seed=seed)
    click.echo(f"wrote {sum(counts.values())} {part} images to {out}: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    click.echo(f"next: edgesight train {out / 'train'} --task anomaly --defects {out / 'val'} --out runs/qc")
    click.echo(f"      edgesight evaluate runs/qc {out / 'test'}")


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


@datasets.command("merge")
@click.argument("captures", type=click.Path(path_type=Path))
@click.option("--into", "data", required=True, type=click.Path(path_type=Path), help="The dataset folder (class folders, optionally under train/ val/ test/) to add the captures to.")
@click.option("--val-share", type=click.FloatRange(0.0, 0.9), default=0.1, show_default=True, help="Share of each class's added images recorded as validation images; the rest are training images, none test images.")
@click.option("--new-classes", is_flag=True, help="Add classes the dataset does not have yet (refused otherwise).")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A run trained on the dataset whose split (its split.json) the dataset keeps; default: DATA/split.json, else the split 'edgesight train DATA' makes by default.")
@click.option("--dry-run", is_flag=True, help="Show what would be added; change nothing.")
def merge(captures: Path, data: Path, val_share: float, new_classes: bool, run_dir: Optional[Path], dry_run: bool) -> None:
    """Add the frames of CAPTURES (a 'run --capture' folder) to a dataset: every class folder,
    not _uncertain/, without duplicates, never into the test split."""
    from .merge import format_merge, merge_captures

    report = merge_captures(captures, data, val_share=val_share, new_classes=new_classes, run=run_dir, dry_run=dry_run)
    click.echo(format_merge(report, captures, data, dry_run))
