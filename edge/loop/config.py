"""``RunConfig``: every option of ``edgesight run``, declared once.

The ``run`` command's flags, ``run --config`` files, the ``runtime:`` section of device
profiles and use-case presets, a deploy archive's ``run.args`` and the Python API
(``Classifier.stream``) all derive from these fields (see :mod:`edgesight.edge.options`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional, Tuple

from .. import options
from ..errors import ConfigError
from ..model.preprocess import parse_roi
from ..urls import protection_problem

opt = options.option

DEVICE_RE = re.compile(r"cpu|coral(:(usb|pci)(:\d+)?)?")
SOURCE_HELP = ("Camera index, /dev/videoN, rtsp:// or http:// URL, video file, image folder or glob, "
               "picamera2[:WxH], synthetic[:WxH@FPS].")


def parse_hostport(text: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``PORT`` (on 127.0.0.1) -> ``(host, port)``."""
    if ":" not in text:
        text = f"127.0.0.1:{text}"
    host, _, port = text.rpartition(":")
    try:
        value = int(port)
    except ValueError:
        raise ConfigError(f"--http '{text}': expected HOST:PORT or PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"--http '{text}': port {value} is outside 0-65535")
    return (host or "127.0.0.1").strip("[]"), value


@dataclass(frozen=True)
class RunConfig:
    """Options of ``edgesight run``. Field names are the ``--config`` / profile keys; the flags
    are the same with ``-`` (``top_k`` is ``--top-k``)."""

    source: str = opt("0", SOURCE_HELP, short="s", envvar="EDGESIGHT_SOURCE", int_as_text=True)
    labels: Optional[str] = opt(None, "labels.txt for a bare .tflite without metadata.", exists="file")
    device: str = opt("cpu", "cpu, or coral / coral:usb / coral:pci for an Edge TPU.", envvar="EDGESIGHT_DEVICE")
    no_verify: bool = opt(False, "Run a model whose sha256 is not checked against model.json (one without a recorded "
                          "sha256, or edited on purpose); says so when it starts.")
    threads: Optional[int] = opt(None, "Interpreter threads (default 1). Cameras: all on the newest frame. "
                                 "Files and folders: that many frames at once, one thread each.", min=1)
    width: Optional[int] = opt(None, "Requested capture width.", min=1)
    height: Optional[int] = opt(None, "Requested capture height.", min=1)
    fps: Optional[float] = opt(None, "Requested capture frame rate.", min=0.0, min_open=True)
    realtime: bool = opt(False, "Play video files at their frame rate, dropping frames when behind (default: every frame).")
    loop: bool = opt(False, "Restart video files and image folders at the end.")
    open_timeout: Optional[float] = opt(None, "Seconds to keep retrying a camera or stream that cannot be opened at start, "
                                        "with back-off (default: 30 for cameras and streams; files and folders open once).",
                                        min=0.0, metavar="SECONDS")
    roi: Optional[str] = opt(None, "x,y,w,h window to classify instead of the whole frame.", metavar="X,Y,W,H")
    threshold: float = opt(0.0, "Below this probability the label is 'unknown'.", min=0.0, max=1.0)
    smooth: int = opt(1, "Average the last N frames before deciding (with hysteresis).", min=1)
    anomaly_threshold: float = opt(1.0, "Anomaly bundles: the score at or above which a frame is a 'defect' "
                                   "(1.0: the threshold calibrated for the bundle's false-reject rate; higher flags fewer).", min=0.0, min_open=True)
    heatmap: bool = opt(False, "Anomaly bundles: draw the anomaly heatmap over the region the model saw (--save, --display, --http).")
    hysteresis: float = opt(0.1, "Margin another label needs to take over when smoothing.", min=0.0, max=1.0)
    max_pixels: int = opt(50_000_000, "Skip image files (an image folder source, classify, the Python API) with more pixels "
                          "than this; below it, large ones are decoded reduced when the model input is much smaller.", min=1)
    top_k: int = opt(3, "Entries of the model output reported with each result.", min=1)
    display: bool = opt(False, "Show the annotated stream in a window (needs a GUI build of OpenCV).")
    headless: bool = opt(False, "No window (the default; refuses --display).")
    save: Optional[str] = opt(None, "Write the annotated video (.mp4 or .avi).", metavar="FILE", writes=True)
    jsonl: Optional[str] = opt(None, "Write one JSON event per result.", metavar="FILE", writes=True)
    on_change_only: bool = opt(False, "JSONL and MQTT: only results whose label changed.")
    http: Optional[str] = opt(None, "Serve the live annotated stream and /status on HOST:PORT (127.0.0.1 unless a host is given).", metavar="HOST:PORT", int_as_text=True)
    http_allow_host: Tuple[str, ...] = opt((), "Another host name the live view may be reached by (repeatable); "
                                           "it answers only its address and localhost otherwise.", metavar="NAME")
    http_token: Optional[str] = opt(None, "Token every --http request must carry (?token= or Authorization: Bearer); "
                                    "needed to serve a non-loopback address.", envvar="EDGESIGHT_HTTP_TOKEN", metavar="TOKEN")
    http_insecure: bool = opt(False, "Serve --http on a non-loopback address without a token.")
    enroll_shots: int = opt(5, "Frames the live view's POST /enroll?name=NAME collects before it enrols the class (0: /enroll off).", min=0)
    enroll_dir: Optional[str] = opt(None, "Where /enroll saves the enrolled bundle when the bundle's folder is read-only "
                                    "(default: the working directory, a service's state directory).", metavar="DIR", writes=True)
    mqtt: Optional[str] = opt(None, "Publish results to mqtt://[user:pass@]host[:port]/topic/prefix.", metavar="URL")
    mqtt_qos: int = opt(0, "MQTT quality of service.", min=0, max=2)
    mqtt_retain: bool = opt(False, "Retain the last label message on the broker.")
    mqtt_queue: int = opt(10_000, "QoS 1/2: messages kept while the broker is down, sent in order when it is back "
                          "(beyond this the oldest are dropped and counted).", min=1)
    gpio: Optional[str] = opt(None, "Pulse this GPIO pin (BCM) when a --gpio-on label is reported.", metavar="PIN", int_as_text=True)
    gpio_on: Tuple[str, ...] = opt((), "Label that triggers the GPIO pulse (repeatable).", metavar="LABEL")
    gpio_pulse_ms: float = opt(100.0, "Length of the GPIO pulse in milliseconds.", min=0.0, min_open=True)
    capture: Optional[str] = opt(None, "Save sampled frames here as a dataset to review and train on: DIR/<label>/, DIR/_uncertain/ "
                                 "and DIR/captures.jsonl.", metavar="DIR", writes=True)
    capture_below: float = opt(0.5, "--capture: a frame whose top-1 score is under this goes to _uncertain/.", min=0.0, max=1.0)
    capture_margin: float = opt(0.1, "--capture: a frame whose top-1 leads the top-2 by less than this goes to _uncertain/.", min=0.0, max=1.0)
    capture_every: float = opt(5.0, "--capture: at most one frame per label (and per label in _uncertain/) every this many seconds "
                               "(0: every frame).", min=0.0, metavar="SECONDS")
    capture_random: float = opt(0.01, "--capture: share of the other frames kept at random.", min=0.0, max=1.0)
    capture_max_mb: float = opt(512.0, "Size cap of the --capture images; the oldest are deleted beyond it.", min=0.0, min_open=True)
    capture_label: Tuple[str, ...] = opt((), "Capture only frames reported as this label (repeatable; 'unknown' allowed; default: all).", metavar="LABEL")
    review_dir: Optional[str] = opt(None, "The older name of --capture.", metavar="DIR", writes=True)
    review_label: Tuple[str, ...] = opt((), "The older name of --capture-label.", metavar="LABEL")
    review_max_mb: Optional[float] = opt(None, "The older name of --capture-max-mb.", min=0.0, min_open=True)
    max_frames: int = opt(0, "Stop after N results (0: no limit).", min=0)
    duration: float = opt(0.0, "Stop after N seconds (0: no limit).", min=0.0)
    stats_json: Optional[str] = opt(None, "Write the final statistics as JSON.", metavar="FILE", writes=True)
    stats_interval: float = opt(5.0, "Seconds between statistics lines (0: none).", min=0.0)
    status_file: Optional[str] = opt(None, "Rewrite this JSON file with the live statistics every --stats-interval (health checks read it).", metavar="FILE", writes=True)
    drift_window: int = opt(300, "Frames compared with the model's baseline for drift (0: off); the label-mix and score "
                            "PSIs need a full window, brightness and contrast shifts 30 frames.", min=0, metavar="FRAMES")
    drift_threshold: float = opt(0.5, "Drift alert when the PSI of the label mix or of the top-1 scores exceeds this "
                                 "(0.2 is the usual rule for a significant shift; a camera's own scene already sits "
                                 "near it against the verification images).", min=0.0, min_open=True, metavar="PSI")
    drift_shift: float = opt(2.0, "Drift alert when the mean brightness or contrast of the model input moves this many "
                             "standard deviations (of the baseline's images) from the baseline.", min=0.0, min_open=True,
                             metavar="SD")
    quiet: bool = opt(False, "No per-change lines, only the periodic statistics (--stats-interval) and the summary.", short="q")
    frame_workers: int = opt(0, "Interpreters classifying consecutive frames at once, one thread each (0: automatic: "
                             "one on live sources and delegates, one per thread on files).", min=0, cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.roi, (tuple, list)):
            object.__setattr__(self, "roi", ",".join(str(int(v)) for v in self.roi))
        for name in ("gpio_on", "capture_label", "review_label", "http_allow_host"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        options.validate(self)
        if not DEVICE_RE.fullmatch(self.device):
            raise ConfigError(f"device '{self.device}' is not cpu, coral, coral:usb or coral:pci")
        if self.roi is not None:
            parse_roi(self.roi)
        if 0 < self.drift_window < 30:
            raise ConfigError(f"--drift-window {self.drift_window}: too few frames to compare; use at least 30, or 0 to turn drift off")
        if self.display and self.headless:
            raise ConfigError("--display and --headless contradict each other; choose one")
        if self.gpio_on and not self.gpio:
            raise ConfigError("--gpio-on needs --gpio PIN")
        if self.gpio and not self.gpio_on:
            raise ConfigError(f"--gpio {self.gpio}: name the label(s) that pulse the pin with --gpio-on LABEL (repeatable), "
                              "e.g. --gpio-on defect")
        if self.http:
            problem = protection_problem(parse_hostport(self.http)[0], self.http_token, self.http_insecure)
            if problem:
                raise ConfigError(problem)
        if self.capture and self.review_dir and self.capture != self.review_dir:
            raise ConfigError("--capture and --review-dir name two folders (--review-dir is the older name of --capture); give one")
        if self.capture_labels and not self.capture_dir:
            raise ConfigError("--capture-label needs --capture DIR: name the folder the frames go to")

    @property
    def capture_dir(self) -> Optional[str]:
        """The capture folder: ``capture``, or its older name ``review_dir``."""
        return self.capture or self.review_dir

    @property
    def capture_labels(self) -> Tuple[str, ...]:
        """``capture_label`` and its older name ``review_label`` together."""
        return tuple(dict.fromkeys(self.capture_label + self.review_label))

    @property
    def capture_cap_mb(self) -> float:
        """``capture_max_mb``, or its older name ``review_max_mb`` when that is given."""
        return self.review_max_mb if self.review_max_mb is not None else self.capture_max_mb

    @property
    def roi_box(self) -> Optional[Tuple[int, int, int, int]]:
        """``roi`` as ``(x, y, w, h)``, or None for the whole frame."""
        return parse_roi(self.roi) if self.roi else None

    def updated(self, **changes: Any) -> "RunConfig":
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def changed(self) -> Dict[str, Any]:
        """The fields that differ from their defaults (what a profile or run.args must say)."""
        base = options.defaults(RunConfig)
        return {k: v for k, v in self.to_dict().items() if v != base[k]}
