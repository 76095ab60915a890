"""Runtime commands: ``run``, ``classify``, ``benchmark``. No TensorFlow anywhere here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click

from ..errors import EdgesightError

log = logging.getLogger("edgesight")


def _open_model(bundle_path: Path, labels: Optional[Path], device: str, threads: Optional[int], verbose: bool = False):
    """Load a bundle and its interpreter, with the Edge TPU delegate when asked or implied."""
    from ..model.bundle import labels_arg, load_bundle
    from ..model.interpreter import TFLiteClassifier, edgetpu_delegate, load_backend

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

    from ..tools.classify import classify_paths, expand_paths, format_results

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
    from ..tools.benchmark import benchmark_bundle, format_benchmark
    from ..model.bundle import labels_arg, load_bundle
    from ..fsutil import write_json
    from ..model.interpreter import edgetpu_delegate, load_backend

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


class ConsoleSink:
    """Prints a line whenever the reported label changes (the live view of a headless run)."""

    needs_annotated = False

    def __init__(self, echo=click.echo) -> None:
        self.echo = echo

    def write(self, frame, result, annotated) -> None:
        if result.changed:
            where = f" {Path(result.path).name}" if result.path else ""
            self.echo(f"frame {result.frame_index}{where}: {result.label} {result.score:.2f} ({result.latency_ms:.1f} ms)")

    def close(self) -> None:
        pass


def _parse_hostport(text: str) -> Tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return (host or "127.0.0.1").strip("[]"), int(port)
    except ValueError:
        raise EdgesightError(f"--http '{text}': expected HOST:PORT or PORT, e.g. 127.0.0.1:8080") from None


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--source", "-s", default="0", show_default=True, envvar="EDGESIGHT_SOURCE",
              help="Camera index, /dev/videoN, rtsp:// or http:// URL, video file, image folder or glob, picamera2[:WxH], synthetic[:WxH@FPS].")
@model_options
@click.option("--threads", type=int, help="Interpreter threads (default 1). Cameras: all on the newest frame. "
              "Files and folders: that many frames at once, one thread each.")
@click.option("--width", type=int, help="Requested capture width.")
@click.option("--height", type=int, help="Requested capture height.")
@click.option("--fps", type=float, help="Requested capture frame rate.")
@click.option("--realtime", is_flag=True, help="Play video files at their frame rate, dropping frames when behind (default: every frame).")
@click.option("--loop", is_flag=True, help="Restart video files and image folders at the end.")
@click.option("--roi", help="x,y,w,h window to classify instead of the whole frame.")
@click.option("--threshold", type=float, default=0.0, show_default=True, help="Below this probability the label is 'unknown'.")
@click.option("--smooth", type=int, default=1, show_default=True, help="Average the last N frames before deciding (with hysteresis).")
@click.option("--hysteresis", type=float, default=0.1, show_default=True, help="Margin another label needs to take over when smoothing.")
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--display", is_flag=True, help="Show the annotated stream in a window (needs a GUI build of OpenCV).")
@click.option("--headless", is_flag=True, help="No window (the default; refuses --display).")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), help="Write the annotated video (.mp4 or .avi).")
@click.option("--jsonl", type=click.Path(dir_okay=False, path_type=Path), help="Write one JSON event per result.")
@click.option("--on-change-only", is_flag=True, help="JSONL and MQTT: only results whose label changed.")
@click.option("--http", "http", help="Serve the live annotated stream and /status on HOST:PORT (127.0.0.1 unless a host is given).")
@click.option("--mqtt", help="Publish results to mqtt://[user:pass@]host[:port]/topic/prefix.")
@click.option("--mqtt-qos", type=click.IntRange(0, 2), default=0, show_default=True)
@click.option("--mqtt-retain", is_flag=True, help="Retain the last label message on the broker.")
@click.option("--gpio", help="Pulse this GPIO pin (BCM) when a --gpio-on label is reported.")
@click.option("--gpio-on", multiple=True, help="Label that triggers the GPIO pulse (repeatable).")
@click.option("--gpio-pulse-ms", type=float, default=100, show_default=True)
@click.option("--review-dir", type=click.Path(file_okay=False, path_type=Path), help="Save frames reported as a --review-label here as JPEG, for review.")
@click.option("--review-label", multiple=True, help="Label whose frames are saved to --review-dir (repeatable; 'unknown' allowed).")
@click.option("--review-max-mb", type=float, default=512, show_default=True, help="Size cap of --review-dir; the oldest frames are deleted beyond it.")
@click.option("--max-frames", type=int, default=0, help="Stop after N results.")
@click.option("--duration", type=float, default=0.0, help="Stop after N seconds.")
@click.option("--stats-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the final statistics as JSON.")
@click.option("--stats-interval", type=float, default=5.0, show_default=True, help="Seconds between statistics lines (0: none).")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), help="Rewrite this JSON file with the live statistics every --stats-interval (health checks read it).")
@click.option("--quiet", "-q", is_flag=True, help="No per-change lines, only the summary.")
@click.pass_context
def run(ctx, bundle, source, labels, device, threads, width, height, fps, realtime, loop, roi, threshold, smooth, hysteresis,
        top_k, display, headless, save, jsonl, on_change_only, http, mqtt, mqtt_qos, mqtt_retain, gpio, gpio_on, gpio_pulse_ms,
        review_dir, review_label, review_max_mb, max_frames, duration, stats_json, stats_interval, status_file, quiet) -> int:
    """Classify frames from a camera, stream, video or folder in real time with BUNDLE.

    Ctrl-C or SIGTERM finishes the current frame, flushes every output, writes the statistics
    and exits 0.
    """
    from ..fsutil import write_json
    from ..model.preprocess import parse_roi
    from ..loop.runner import LoopConfig, StopFlag, run_loop, signals_stop
    from ..sources.sources import open_source
    from ..loop.sdnotify import Notifier

    if display and headless:
        raise EdgesightError("--display and --headless contradict each other; choose one")
    if gpio_on and not gpio:
        raise EdgesightError("--gpio-on needs --gpio PIN")
    if bool(review_dir) != bool(review_label):
        raise EdgesightError("--review-dir and --review-label go together: name the folder and the labels to keep")
    verbose = bool(ctx.find_root().params.get("verbose"))
    b, clf = _open_model(bundle, labels, device, threads, verbose)
    for flag, names in (("--gpio-on", gpio_on), ("--review-label", review_label)):
        unknown = sorted(set(names) - set(b.info.labels) - {"unknown"})
        if unknown:
            raise EdgesightError(f"{flag} {', '.join(unknown)}: not a label of this model ({', '.join(b.info.labels)})")
    cfg = LoopConfig(threshold=threshold, smooth=max(1, smooth), hysteresis=hysteresis, top_k=top_k,
                     roi=parse_roi(roi) if roi else None, max_frames=max_frames, duration=duration, stats_interval=stats_interval)
    review = (review_dir, review_label, review_max_mb) if review_dir else None
    sinks = _make_sinks(display, save, jsonl, on_change_only, http, mqtt, mqtt_qos, mqtt_retain, gpio, gpio_on, gpio_pulse_ms, fps, quiet, review)
    http_sink = next((s for s in sinks if getattr(getattr(s, "sink", s), "update_stats", None)), None)
    stats = None
    notifier = Notifier()
    last: dict = {}

    def on_stats(st) -> None:
        d = {**st.to_dict(), **last}
        if http_sink is not None:
            getattr(http_sink, "sink", http_sink).update_stats(d)
        if status_file:
            write_json(status_file, d)

    def on_result(result, st) -> None:
        last.update(label=result.label, score=round(result.score, 4), updated=round(result.wall_time, 3))
        notifier.feed(f"{st.frames} frames, {result.label}")

    try:
        with open_source(source, width=width, height=height, fps=fps, realtime=realtime, loop=loop, compute_threads=clf.cpu_threads) as src:
            if http_sink is not None:
                click.echo(f"live view: http://{_address(http_sink)}/", err=True)
            notifier.ready(f"classifying {source}")
            with signals_stop(StopFlag()) as stop:
                stats = run_loop(clf, b.info, src, sinks, cfg, stop, on_stats=on_stats, on_result=on_result,
                                 printer=lambda line: click.echo(line, err=True))
            if stop.is_set():
                click.echo(f"stopping ({stop.reason})", err=True)
    finally:
        notifier.stopping()
        notifier.close()
        for s in sinks:
            try:
                s.close()
            except Exception as e:  # one failing output must not lose the others' data
                log.error("closing %s failed: %s", type(s).__name__, e)
    summary = stats.to_dict()
    summary["model"] = str(b.model_path)
    summary["source"] = source
    p = summary["latency_ms"]
    click.echo(f"{summary['frames']} frames in {summary['seconds']:.1f} s: {summary['fps']:.1f} FPS, dropped {summary['dropped']}, "
               + (f"latency p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms" if p["p50"] is not None else "no latency figures"))
    if stats_json:
        write_json(stats_json, summary)
    if status_file:
        write_json(status_file, {**summary, **last, "finished": True})
    return 0


def _address(sink) -> str:
    inner = getattr(sink, "sink", sink)
    host, port = inner.address[:2]
    return f"{host}:{port}"


def _make_sinks(display, save, jsonl, on_change_only, http, mqtt, qos, retain, gpio, gpio_on, pulse_ms, fps, quiet, review=None) -> list:
    """Build the outputs; every one but the window runs on its own thread (AsyncSink)."""
    from ..sinks import sinks as S

    out: list = [] if quiet else [ConsoleSink(lambda line: click.echo(line))]
    made: list = []
    try:
        if display:
            out.append(S.DisplaySink())
        if jsonl:
            made.append(S.JsonlSink(jsonl, on_change_only=on_change_only))
        if save:
            made.append(S.VideoSink(save, fps=fps or 30.0))
        if http:
            host, port = _parse_hostport(http if ":" in http else f"127.0.0.1:{http}")
            made.append(S.HttpSink(host, port))
        if mqtt:
            made.append(S.MqttSink(mqtt, qos=qos, retain=retain, on_change_only=on_change_only))
        if gpio:
            made.append(S.GpioSink(gpio, gpio_on, pulse_ms=pulse_ms))
        if review:
            made.append(S.ReviewSink(review[0], review[1], max_mb=review[2]))
    except BaseException:
        for s in out + made:
            s.close()
        raise
    return out + [S.AsyncSink(s) for s in made]


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
