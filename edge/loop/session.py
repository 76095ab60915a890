"""A whole ``edgesight run``: outputs built from a :class:`RunConfig`, the loop under signal
handling and the systemd watchdog, live statistics for health checks, and the summary.

``edgesight run`` is a thin shell around :func:`run_session`, so a program that embeds the
runtime gets the same outputs, status file and summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..errors import ConfigError, EdgesightError
from ..fsutil import write_json
from ..urls import redact_url
from .config import RunConfig, parse_hostport

log = logging.getLogger("edgesight")


def check_labels(cfg: RunConfig, labels: List[str]) -> None:
    """Labels named by options must be the model's (or ``unknown``)."""
    for flag, names in (("--gpio-on", cfg.gpio_on), ("--capture-label", cfg.capture_labels)):
        unknown = sorted(set(names) - set(labels) - {"unknown"})
        if unknown:
            raise ConfigError(f"{flag} {', '.join(unknown)}: not a label of this model ({', '.join(labels)})")


def capture_sink(cfg: RunConfig, clf: Any = None) -> Any:
    """The :class:`~edgesight.edge.sinks.CaptureSink` of ``cfg`` (``--capture``), recording the
    labels and model sha256 of ``clf`` (a :class:`~edgesight.edge.classifier.Classifier`)."""
    from ..model.bundle import EDGETPU_SHA_KEY, SHA_KEY, sha256_file
    from ..sinks import CaptureSink

    labels: List[str] = list(clf.labels) if clf is not None else []
    sha = ""
    if clf is not None:
        bundle = clf.bundle
        sha = bundle.info.extra.get(EDGETPU_SHA_KEY if bundle.edgetpu else SHA_KEY) or ""
        if not sha or not getattr(clf, "verified", True):
            sha = sha256_file(bundle.model_path)  # unverified or bare: record what actually ran
    return CaptureSink(cfg.capture_dir, labels, model_sha256=sha, source=redact_url(cfg.source), below=cfg.capture_below,
                       margin=cfg.capture_margin, every=cfg.capture_every, random=cfg.capture_random,
                       max_mb=cfg.capture_cap_mb, only=cfg.capture_labels, roi=cfg.roi_box)


def http_sink(cfg: RunConfig, clf: Any = None) -> Any:
    """The live view of ``cfg`` (``--http``): with ``clf``, its labels and ``POST /classify``
    (on an interpreter of its own, so the loop's is never shared); with ``--capture``, the
    newest captures and the relabel page."""
    from ..sinks import HttpSink
    from ..web.classify import bytes_classifier

    classify = None
    if clf is not None:
        classify = bytes_classifier(clf, top_k=cfg.top_k, threshold=cfg.threshold, max_pixels=cfg.max_pixels,
                                    own_interpreter=True)
    enroller = None
    if clf is not None and cfg.enroll_shots and getattr(clf, "_reference", None) is not None:
        from ..web.enroll import LiveEnroller

        # POST /enroll: a class from the frames on screen (the model has an embedding output)
        enroller = LiveEnroller(clf, cfg.enroll_shots, Path(cfg.enroll_dir) if cfg.enroll_dir else None)
    sink = HttpSink(*parse_hostport(cfg.http), allow_hosts=cfg.http_allow_host, token=cfg.http_token,
                    insecure=cfg.http_insecure, labels=list(clf.labels) if clf is not None else (),
                    classify=classify, captures=cfg.capture_dir, enroll=enroller)
    if enroller is not None:
        enroller.on_change = lambda labels: setattr(sink, "labels", list(labels))
    return sink


def make_sinks(cfg: RunConfig, echo: Callable[[str], None] = print, clf: Any = None) -> list:
    """The outputs ``cfg`` asks for; every one but the window, the console and a sink that never
    blocks (MQTT, with its own queue) runs on its own thread behind a bounded queue
    (:class:`~edgesight.edge.sinks.AsyncSink`). A sink that
    cannot be made closes the ones already made. ``clf`` (the classifier) gives the captures
    their labels and model sha256."""
    from .. import sinks as S

    out: list = [] if cfg.quiet else [S.ConsoleSink(echo)]
    made: list = []
    try:
        if cfg.display:
            out.append(S.DisplaySink())
        if cfg.jsonl:
            made.append(S.JsonlSink(cfg.jsonl, on_change_only=cfg.on_change_only))
        if cfg.save:
            made.append(S.VideoSink(cfg.save, fps=cfg.fps or 30.0))
        if cfg.http:
            made.append(http_sink(cfg, clf))
        if cfg.mqtt:
            from ..sinks.mqtt import device_info

            made.append(S.MqttSink(cfg.mqtt, qos=cfg.mqtt_qos, retain=cfg.mqtt_retain, on_change_only=cfg.on_change_only,
                                    max_queued=cfg.mqtt_queue, info=device_info(clf) if clf is not None else None))
        if cfg.gpio:
            made.append(S.GpioSink(cfg.gpio, cfg.gpio_on, pulse_ms=cfg.gpio_pulse_ms))
        if cfg.capture_dir:
            made.append(capture_sink(cfg, clf))
    except BaseException:
        for s in out + made:
            s.close()
        raise
    return out + [s if s.never_blocks else S.AsyncSink(s) for s in made]


def run_session(clf: Any, cfg: RunConfig, echo: Callable[[str], None] = print,
                err: Callable[[str], None] = print) -> Dict[str, Any]:
    """Classify ``cfg.source`` with ``clf`` (a :class:`~edgesight.edge.classifier.Classifier`)
    into the outputs of ``cfg`` until the source ends, a
    limit is reached, or SIGINT/SIGTERM arrives (the current frame is finished, every output
    flushed).

    Args:
        echo: where per-change lines go (stdout in the CLI).
        err: where progress and statistics lines go (stderr in the CLI).

    Returns:
        The summary: the loop statistics plus ``model`` and ``source`` (also written to
        ``cfg.stats_json``, and to ``cfg.status_file`` with ``finished: true``).

    Raises:
        Whatever ended the loop early (a source that does not come back, a failing output);
        the statistics counted until then are still written, with a one-line ``error``.
    """
    from ..sources import open_source
    from .runner import StopFlag, run_loop, signals_stop
    from .stats import LoopStats
    from .preflight import check_outputs, check_roi_fits
    from .sdnotify import Notifier

    check_labels(cfg, clf.labels)
    check_outputs(cfg)
    sinks: list = []  # made once the source is open and its first frame fits --roi
    stats = None
    notifier = Notifier()
    last: dict = {}

    latest: dict = {}

    # The statistics and the result they end on are taken at the same moment (on_result runs for
    # a frame before on_stats may run for it), so /status and the status file never pair a newer
    # result with older counts.
    def on_stats(st) -> None:
        d = {**st.to_dict(), **last}
        for s in sinks:
            s.update_stats({**d, "result": latest["result"].to_event() if latest else None})
        if cfg.status_file:
            write_json(cfg.status_file, d)

    def on_result(result, st) -> None:
        last.update(frame=result.frame_index, label=result.label, score=round(result.score, 4),
                    updated=round(result.wall_time, 3))
        latest["result"] = result
        notifier.feed(f"{st.frames} frames, {result.label}")

    failure: Optional[str] = None
    try:
        # Image files much larger than the model input are decoded reduced, unless --roi names
        # a window in the file's own pixels.
        with open_source(cfg.source, width=cfg.width, height=cfg.height, fps=cfg.fps, realtime=cfg.realtime,
                         loop=cfg.loop, open_timeout=cfg.open_timeout, compute_threads=clf.model.cpu_threads,
                         target=None if cfg.roi else clf.info.preprocess.size, max_pixels=cfg.max_pixels) as opened:
            src = check_roi_fits(opened, cfg.roi_box)
            sinks = make_sinks(cfg, echo, clf=clf)
            notifier.ready(f"classifying {redact_url(cfg.source)}")
            stats = LoopStats()
            with signals_stop(StopFlag()) as stop:
                run_loop(clf.model, clf.info, src, sinks, cfg, stop, on_stats=on_stats, on_result=on_result,
                         printer=err, stats=stats)
            if stop.is_set():
                err(f"stopping ({stop.reason})")
    except Exception as e:
        failure = error_line(e)
        raise
    finally:
        notifier.stopping()
        notifier.close()
        for s in sinks:
            try:
                s.close()
            except Exception as e:  # one failing output must not lose the others' data
                log.error("closing %s failed: %s", type(s).__name__, e)
        # A run that ends on an error still leaves what it counted, with the error, for whoever
        # reads the statistics; one that failed before its first frame leaves nothing.
        summary: Dict[str, Any] = {}
        if stats is not None:
            try:
                summary = _save_summary(clf, cfg, stats, last, failure)
            except Exception as e:
                if failure is None:
                    raise
                log.error("writing the statistics failed: %s", e)  # the run's own error is the one to report
    return summary


def error_line(exc: BaseException) -> str:
    """``exc`` as one line: an edgesight error's message, otherwise its type and message."""
    text = str(exc) if isinstance(exc, EdgesightError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
    return " ".join(text.split())


def _save_summary(clf: Any, cfg: RunConfig, stats: Any, last: dict, failure: Optional[str]) -> Dict[str, Any]:
    summary = stats.to_dict()
    summary["model"] = str(clf.bundle.model_path)
    summary["source"] = redact_url(cfg.source)
    if failure is not None:
        summary["error"] = failure
    if cfg.stats_json:
        write_json(cfg.stats_json, summary)
    if cfg.status_file:
        write_json(cfg.status_file, {**summary, **last, "finished": True})
    return summary


def format_summary(summary: Dict[str, Any]) -> str:
    """The one-line summary printed at the end of a run."""
    p = summary["latency_ms"]
    n = summary.get("skipped", 0)
    skipped = f"skipped {n} image file{'s' if n != 1 else ''}, " if n else ""
    return (f"{summary['frames']} frames in {summary['seconds']:.1f} s: {summary['fps']:.1f} FPS, dropped {summary['dropped']}, {skipped}"
            + (f"latency p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms" if p["p50"] is not None else "no latency figures"))
