"""Web commands without a camera: ``review`` (the relabel page of a capture folder) and ``serve``
(an inference server: ``POST /classify``). No TensorFlow anywhere here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import click

from .. import options

_HTTP = ("http", "http_allow_host", "http_token", "http_insecure")
DEFAULT_HTTP = "127.0.0.1:8080"


def _options(only: Tuple[str, ...], **helps: str):
    from ..loop.config import RunConfig

    return options.click_options(RunConfig, only=only, helps=helps)


def _serve_until_stopped(make_server: Callable[[], Any], started: Callable[[Any], str]) -> None:
    """Start ``make_server()``, print ``started(server)``, serve until SIGINT or SIGTERM, stop it.

    The signals are taken over before the server answers anything, so a stop that comes right
    after the first answer is still a clean one.
    """
    from ..loop.runner import StopFlag, signals_stop

    with signals_stop(StopFlag()) as stop:
        server = make_server()
        try:
            click.echo(started(server), err=True)
            while not stop.event.wait(0.5):
                pass
            click.echo(f"stopping ({stop.reason})", err=True)
        finally:
            server.close()


def _http_config(http: Optional[str], allow: Tuple[str, ...], token: Optional[str], insecure: bool):
    """The address to serve, checked as ``run --http`` is (a token off loopback)."""
    from ..loop.config import RunConfig, parse_hostport

    cfg = RunConfig(http=http or DEFAULT_HTTP, http_allow_host=allow, http_token=token, http_insecure=insecure)
    return parse_hostport(cfg.http), cfg


@click.command()
@click.argument("captures", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_options(_HTTP, http=f"Serve the relabel page on HOST:PORT (default {DEFAULT_HTTP}).")
@_options(("labels",), labels="The classes, one a line (default: the class folders and the labels captures.jsonl names).")
@click.option("--bundle", type=click.Path(exists=True, path_type=Path), help="Take the classes from this model bundle.")
def review(captures: Path, http, http_allow_host, http_token, http_insecure, labels, bundle: Optional[Path]) -> int:
    """Relabel the images of CAPTURES (a run --capture folder) in a browser: one click files an
    image under a class folder and records it in captures.jsonl."""
    from ..errors import ConfigError
    from ..web import CaptureFolder, WebServer, review_app_routes

    if labels and bundle:
        raise ConfigError("--labels and --bundle both name the classes; give one")
    classes: Tuple[str, ...] = ()
    if labels:
        from ..model.spec import read_labels

        classes = read_labels(Path(labels))
    elif bundle:
        from ..model.bundle import load_bundle

        classes = tuple(load_bundle(bundle, verify=False).info.labels)
    folder = CaptureFolder(captures, classes)
    (host, port), cfg = _http_config(http, http_allow_host, http_token, http_insecure)
    pending = sum(1 for item in folder.items() if not item["reviewed"])
    _serve_until_stopped(
        lambda: WebServer(host, port, review_app_routes(folder), allow_hosts=cfg.http_allow_host, token=cfg.http_token,
                          insecure=cfg.http_insecure),
        lambda server: f"relabel page at {server.url}review ({pending} images to review; classes: "
                       f"{', '.join(folder.labels)}); Ctrl-C stops it")
    return 0


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_options(_HTTP, http=f"Serve POST /classify on HOST:PORT (default {DEFAULT_HTTP}).")
@_options(("labels", "device", "no_verify", "threads", "threshold", "top_k", "max_pixels"))
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="The largest image accepted, in MiB; bigger requests get 413.")
@click.pass_context
def serve(ctx, bundle: Path, http, http_allow_host, http_token, http_insecure, labels, device, no_verify, threads,
          threshold, top_k, max_pixels, max_body_mb: float) -> int:
    """Serve BUNDLE as an inference server without a camera: POST an image to /classify, get
    the label, score and top-k as JSON (same host and token rules as run --http)."""
    from ..classifier import Classifier
    from ..model.bundle import sha256_file
    from ..web import WebServer, bytes_classifier, inference_routes
    from ..web.app import InferenceStats

    (host, port), cfg = _http_config(http, http_allow_host, http_token, http_insecure)
    clf = Classifier(bundle, labels=labels, device=device, threads=threads, verify=not no_verify, max_pixels=max_pixels)
    if ctx.find_root().params.get("verbose"):
        click.echo(clf.describe(), err=True)
    model = {"name": Path(bundle).name, "sha256": sha256_file(clf.bundle.model_path), "labels": clf.labels,
             "input": list(clf.info.preprocess.size)}
    classify = bytes_classifier(clf, top_k=top_k, threshold=threshold)
    try:
        _serve_until_stopped(
            lambda: WebServer(host, port, inference_routes(classify, InferenceStats(model)), allow_hosts=cfg.http_allow_host,
                              token=cfg.http_token, insecure=cfg.http_insecure, max_body=int(max_body_mb * 2**20)),
            lambda server: f"classifying at {server.url}classify ({len(clf.labels)} classes); Ctrl-C stops it")
    finally:
        clf.close()
    return 0
