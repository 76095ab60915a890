"""Runtime commands: ``run``, ``classify``, ``benchmark``. No TensorFlow anywhere here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click

from edge.errors import EdgesightError

log = logging.getLogger("edgesight")


def _open_model(bundle_path: Path, labels: Optional[Path], device: str, threads: Optional[int], verbose: bool = False):
    """Load a bundle and its interpreter, with the Edge TPU delegate when asked or implied."""
    from edge.bundle import labels_arg, load_bundle
    from edge.interpreter import TFLiteClassifier, edgetpu_delegate, load_backend

    bundle = load_bundle(bundle_path, labels_arg(labels), prefer_edgetpu=device.startswith("coral"))
    backend = load_backend()
    delegates = []
    if device.startswith("coral") or bundle.edgetpu:
        delegates.append(edgetpu_delegate(backend, device.split(":", 1)[1] if ":" in device else None))
    spec = bundle.info.preprocess
    clf = TFLiteClassifier(bundle.model_path, num_threads=threads, delegates=delegates, output=bundle.info.output,
                           input_mean=spec.input_mean[0], input_std=spec.input_std[0], backend=backend)
    if verbose:
        click.echo(f"model {bundle.model_path} on {backend.name} {backend.version}" + (" with the Edge TPU delegate" if delegates else ""), err=True)
    return bundle, clf


_model_options = [
    click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="labels.txt for a bare .tflite without metadata."),
    click.option("--device", default="cpu", show_default=True, envvar="EDGESIGHT_DEVICE", help="cpu, or coral / coral:usb / coral:pci for an Edge TPU."),
]


def model_options(f):
    for opt in reversed(_model_options):
        f = opt(f)
    return f


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("paths", nargs=-1, required=True)
@model_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--threshold", type=float, default=0.0, show_default=True, help="Below this probability the label is 'unknown'.")
@click.option("--threads", type=int, help="Interpreter threads.")
@click.pass_context
def classify(ctx, bundle: Path, paths: Tuple[str, ...], labels, device, fmt, top_k, threshold, threads) -> int:
    """Classify image files, folders and glob patterns with BUNDLE."""
    from tqdm import tqdm

    from edge.classify import classify_paths, expand_paths, format_results

    verbose = bool(ctx.find_root().params.get("verbose"))
    b, clf = _open_model(bundle, labels, device, threads, verbose)
    files, problems = expand_paths(paths)
    for item, reason in problems:
        click.echo(f"warning: {item}: {reason}", err=True)
    if not files:
        raise EdgesightError("no images to classify; give image files, folders or glob patterns")
    with tqdm(total=len(files), desc="classifying", unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        results, skipped = classify_paths(b, files, top_k=top_k, threshold=threshold, model=clf, progress=bar.update)
    for path, reason in skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(format_results(results, fmt))
    return 0 if results else 1


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@model_options
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts to measure, e.g. 1,2,4.")
@click.option("--runs", type=int, default=200, show_default=True)
@click.option("--warmup", type=int, default=20, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
def benchmark(bundle: Path, labels, device, threads: str, runs: int, warmup: int, json_out: Optional[Path]) -> int:
    """Measure BUNDLE: invoke latency (p50/p90/p99), preprocessing, end-to-end, peak memory."""
    from edge.benchmark import benchmark_bundle, format_benchmark
    from edge.bundle import labels_arg, load_bundle
    from edge.fsutil import write_json
    from edge.interpreter import edgetpu_delegate, load_backend

    try:
        counts: List[int] = [int(x) for x in threads.split(",") if x.strip()]
    except ValueError:
        raise EdgesightError(f"--threads '{threads}': expected comma-separated integers like 1,2,4") from None
    b = load_bundle(bundle, labels_arg(labels), prefer_edgetpu=device.startswith("coral"))
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
