"""Runtime commands: ``run``, ``classify``, ``benchmark``. No TensorFlow anywhere here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click

from .. import options
from ..errors import EdgesightError

log = logging.getLogger("edgesight")


def _run_config_options(**kw):
    from ..loop.config import RunConfig

    return options.click_options(RunConfig, **kw)


def _classifier(ctx: click.Context, bundle: Path, labels, device: str, threads: Optional[int], no_verify: bool,
                max_pixels: Optional[int] = None):
    from ..classifier import Classifier

    clf = Classifier(bundle, labels=labels, device=device, threads=threads, verify=not no_verify, max_pixels=max_pixels)
    if ctx.find_root().params.get("verbose"):
        click.echo(clf.describe(), err=True)
    return clf


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("paths", nargs=-1, required=True)
@_run_config_options(only=("labels", "device", "no_verify", "threads", "threshold", "top_k", "max_pixels"))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def classify(ctx, bundle: Path, paths: Tuple[str, ...], labels, device, no_verify, threads, threshold, top_k, max_pixels,
             fmt) -> int:
    """Classify image files, folders and glob patterns with BUNDLE."""
    from tqdm import tqdm

    from ..tools.classify import expand_paths, format_results

    clf = _classifier(ctx, bundle, labels, device, threads, no_verify, max_pixels)
    files, problems = expand_paths(paths)
    for item, reason in problems:
        click.echo(f"warning: {item}: {reason}", err=True)
    if not files:
        given = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        raise EdgesightError(f"no images to classify in {given}; give image files, folders or glob patterns")
    with tqdm(total=len(files), desc="classifying", unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        results, skipped = clf.classify_files(files, top_k=top_k, threshold=threshold, progress=bar.update)
    for path, reason in skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(format_results([r.to_dict() for r in results], fmt))
    return 0 if results else 1


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_run_config_options(only=("labels", "device", "no_verify"))
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts to measure, e.g. 1,2,4.")
@click.option("--runs", type=int, default=200, show_default=True)
@click.option("--warmup", type=int, default=20, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
def benchmark(bundle: Path, labels, device, no_verify, threads: str, runs: int, warmup: int, json_out: Optional[Path]) -> int:
    """Measure BUNDLE: invoke latency (p50/p90/p99), preprocessing, end-to-end, peak memory."""
    from ..tools.benchmark import benchmark_bundle, format_benchmark
    from ..model.bundle import labels_arg, load_bundle
    from ..fsutil import write_json
    from ..model.interpreter import edgetpu_delegate, load_backend

    try:
        counts: List[int] = [int(x) for x in threads.split(",") if x.strip()]
    except ValueError:
        raise EdgesightError(f"--threads '{threads}': expected comma-separated integers like 1,2,4") from None
    if not counts or min(counts) < 1:
        raise EdgesightError(f"--threads must be at least 1, got '{threads}'")
    b = load_bundle(bundle, labels_arg(Path(labels) if labels else None), prefer_edgetpu=device.startswith("coral"),
                    verify=not no_verify)
    if no_verify:
        click.echo(f"warning: model {b.model_path} is not verified (--no-verify): its sha256 is not checked against model.json", err=True)
    backend = load_backend()
    factory = None
    if device.startswith("coral") or b.edgetpu:
        dev = device.split(":", 1)[1] if ":" in device else None
        factory = lambda: [edgetpu_delegate(backend, dev)]  # noqa: E731
    rep = benchmark_bundle(b, counts, runs=runs, warmup=warmup, delegates_factory=factory, backend=backend)
    click.echo(format_benchmark(rep))
    if json_out:
        write_json(json_out, rep)
    return 0


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file of options (keys: the flags' names with underscores, e.g. top_k); flags given on the command line win.")
@_run_config_options()
@click.pass_context
def run(ctx, bundle: Path, config_path: Optional[Path], **_: object) -> int:
    """Classify frames from a camera, stream, video or folder in real time with BUNDLE.

    Ctrl-C or SIGTERM finishes the current frame, flushes every output, writes the statistics
    and exits 0.
    """
    from ..loop.config import RunConfig
    from ..loop.session import format_summary, run_session

    cfg = options.build(RunConfig, ctx, config_path)
    clf = _classifier(ctx, bundle, cfg.labels, cfg.device, cfg.threads, cfg.no_verify)
    summary = run_session(clf, cfg, echo=click.echo, err=lambda line: click.echo(line, err=True))
    click.echo(format_summary(summary))
    return 0


@click.command()
@click.option("--bundle", type=click.Path(exists=True, path_type=Path), help="Also check that this bundle loads and runs here; the exit status says whether it can.")
@click.option("--json", "json_out", is_flag=True, help="Print the report as JSON.")
def doctor(bundle: Optional[Path], json_out: bool) -> int:
    """Report what this machine has for running models: platform, LiteRT backend, cameras,
    Edge TPU, throttling, temperature, disk; and how to install what is missing."""
    from ..tools.doctor import run_checks

    rep = run_checks(bundle)
    click.echo(json.dumps(rep.to_dict(), indent=2) if json_out else rep.format())
    return 0 if rep.can_run in (None, True) else 1
