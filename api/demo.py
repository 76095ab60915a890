"""``edgesight demo``: the whole product on a fresh machine, with no data and no network.

Generates a traffic-sign dataset, trains a small CNN, converts it to a verified int8 bundle,
then runs the camera loop headless on a generated dashcam video of the same signs, printing the
live predictions, and ends with a summary. Every artefact lands in one folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

from edgesight.edge.errors import ConfigError
from edgesight.edge.fsutil import write_json
from edgesight.training.synth import SIGN_CLASSES

VIDEO_SIZE = (640, 360)
VIDEO_FPS = 15.0
# Seconds kept from the time budget for what follows the last epoch: evaluating and saving the
# model, converting and verifying it, making the video and running the camera loop. They take
# about 30 s on two cores; the rest is margin for a slower machine.
AFTER_TRAINING_S = 60.0
# Training gets at least this long, whatever the budget, so the model is worth converting.
MIN_TRAINING_S = 30.0


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``edgesight demo``.

    Attributes:
        out: the folder that receives every artefact.
        classes: sign classes to use (at least 2).
        fast: a tiny dataset and one epoch (a smoke test of the whole pipeline, in about a
            minute; its accuracy means little).
        seed: seed of the data generator, of training, of the calibration sample and of the video.
        time_budget: seconds the whole demo should take at most (0: no limit). Training
            stops before an epoch that would leave too little of it for the stages after it;
            the best epoch so far is kept.
    """

    out: str = "edgesight-demo"
    classes: Tuple[str, ...] = SIGN_CLASSES
    fast: bool = False
    seed: int = 0
    time_budget: float = 300.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(SIGN_CLASSES))
        if unknown:
            raise ConfigError(f"--classes: unknown sign class(es) {', '.join(unknown)}; choose from {', '.join(SIGN_CLASSES)}")
        if len(set(self.classes)) < 2:
            raise ConfigError("--classes: give at least 2 different sign classes")
        if not self.time_budget >= 0:
            raise ConfigError(f"--time-budget: give seconds (0: no limit), got {self.time_budget}")

    @property
    def per_class(self) -> int:
        return 8 if self.fast else 160

    @property
    def img_size(self) -> int:
        return 32 if self.fast else 48

    @property
    def epochs(self) -> int:
        return 1 if self.fast else 14

    @property
    def video_seconds(self) -> float:
        # One sign every 2 s, every class twice (in two shuffled rounds): the share of sign
        # frames read right then rests on 20 signs, and a single hard sign costs 5 points, not 10.
        return 4.0 * len(self.classes) if not self.fast else 2.0 * min(2, len(self.classes))


def video_score(events_file: Union[str, Path], truth_file: Union[str, Path]) -> Dict[str, Any]:
    """How well a run labelled a generated drive: ``edgesight run --jsonl EVENTS`` against the
    video's ground truth (``drive.json`` beside ``drive.mp4``).

    Returns:
        ``sign_frames``, ``correct_frames``, ``accuracy`` (their ratio) and ``signs``: per
        sign, its ``label``, ``frames``, ``correct`` and the label ``reported`` most often over
        the second half of its approach.
    """
    events = [json.loads(line) for line in Path(events_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    truth = json.loads(Path(truth_file).read_text(encoding="utf-8"))
    return _video_accuracy(events, truth["signs"] if isinstance(truth, dict) else truth)


def _video_accuracy(events: List[dict], timeline: Sequence[dict]) -> Dict[str, Any]:
    """Share of frames showing a sign whose reported label is that sign."""
    by_frame = {e["frame"]: e["label"] for e in events}
    shown = correct = 0
    per_sign = []
    for t in timeline:
        frames = [f for f in range(t["start_frame"], t["end_frame"] + 1) if f in by_frame]
        hits = sum(by_frame[f] == t["label"] for f in frames)
        shown += len(frames)
        correct += hits
        labels = [by_frame[f] for f in frames]
        final = max(set(labels[-len(labels) // 2 :]), key=labels.count) if labels else None
        per_sign.append({"label": t["label"], "frames": len(frames), "correct": hits, "reported": final})
    return {"sign_frames": shown, "correct_frames": correct, "accuracy": correct / shown if shown else 0.0, "signs": per_sign}


def training_time_limit(cfg: DemoConfig, elapsed: float) -> float:
    """Seconds of training that keep the demo within ``cfg.time_budget`` (0: no limit).

    Args:
        cfg: the demo's options (``--fast`` trains one epoch and needs no limit).
        elapsed: seconds the demo has already taken.
    """
    if not cfg.time_budget or cfg.fast:
        return 0.0
    return max(MIN_TRAINING_S, cfg.time_budget - elapsed - AFTER_TRAINING_S)


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run every stage and write ``summary.json`` into ``cfg.out``.

    Returns:
        The summary.
    """
    from edgesight.convert.config import ConvertConfig
    from edgesight.convert.convert import convert_source, format_conversion_report
    from edgesight.edge.model.bundle import load_bundle
    from edgesight.edge.model.interpreter import TFLiteClassifier
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.runner import run_loop
    from edgesight.edge.sinks import JsonlSink, Sink, VideoSink
    from edgesight.edge.sources import open_source
    from edgesight.training.config import TrainConfig
    from edgesight.training.synth import drive_roi, make_drive_video, write_signs
    from edgesight.training.train import train

    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages: Dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        stages[name] = round(time.time() - start, 2)

    echo(f"[1/5] generating {cfg.per_class} images for each of {len(cfg.classes)} sign classes in {out / 'data'}")
    t = time.time()
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    write_signs(data, per_class=cfg.per_class, size=cfg.img_size * 2, seed=cfg.seed, classes=cfg.classes)
    stage("data", t)

    time_limit = training_time_limit(cfg, time.time() - t0)
    within = f" within {time_limit:.0f} s" if time_limit else ""
    echo(f"[2/5] training cnn_small at {cfg.img_size}x{cfg.img_size} for up to {cfg.epochs} epochs{within} (no mirrored images: turn_left is not turn_right)")
    t = time.time()
    tcfg = TrainConfig(
        data=str(data), out=str(out / "run"), model="cnn_small", img_size=cfg.img_size, epochs=cfg.epochs, batch_size=32,
        learning_rate=3e-3, augment="light", hflip=False, early_stopping=4, seed=cfg.seed, overwrite=True,
        val_split=0.15, test_split=0.15, time_limit=time_limit,
        # The camera loop shrinks a 216-pixel window to the model's 48: a box filter keeps thin
        # symbols from aliasing, and on a window this small it costs a fraction of a millisecond.
        interpolation="area",
    )
    result = train(tcfg, progress=False)
    stage("train", t)

    echo("[3/5] converting to full-integer int8 and verifying on the test split")
    t = time.time()
    conv = convert_source(out / "run", out / "model-int8", ConvertConfig.int8(num_calib=200, max_drop=2.0, seed=cfg.seed), progress=False)
    echo(format_conversion_report(conv.report))
    stage("convert", t)

    echo(f"[4/5] generating a {cfg.video_seconds:.0f} s dashcam video past the signs")
    t = time.time()
    video = out / "drive.mp4"
    timeline = make_drive_video(video, classes=cfg.classes, seconds=cfg.video_seconds, fps=VIDEO_FPS, size=VIDEO_SIZE, seed=cfg.seed)
    roi = drive_roi(VIDEO_SIZE)
    stage("video", t)

    echo(f"[5/5] running the camera loop headless on {video} (window {roi[0]},{roi[1]},{roi[2]},{roi[3]}, smoothing 3 frames)")
    t = time.time()
    bundle = load_bundle(out / "model-int8")
    model = TFLiteClassifier(bundle.model_path, num_threads=os.cpu_count())

    class Live(Sink):
        def write(self, frame, res, annotated) -> None:
            if res.changed:
                echo(f"  t={frame.index / VIDEO_FPS:5.1f}s frame {res.frame_index:4d}: {res.label:<14} {res.score:.2f}  ({res.latency_ms:.1f} ms)")

        def close(self) -> None:
            pass

    jsonl = JsonlSink(out / "events.jsonl")
    annotated = VideoSink(out / "annotated.mp4", fps=VIDEO_FPS)
    sinks = [Live(), jsonl, annotated]
    try:
        with open_source(str(video), compute_threads=model.cpu_threads) as src:
            stats = run_loop(model, bundle.info, src, sinks, RunConfig(threshold=0.5, smooth=3, hysteresis=0.1, roi=roi, stats_interval=0), printer=echo)
    finally:
        for s in sinks:
            s.close()
    stage("run", t)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    video_acc = _video_accuracy(events, timeline)
    run_stats = stats.to_dict()
    summary = {
        "config": {**asdict(cfg), "classes": list(cfg.classes), "per_class": cfg.per_class, "img_size": cfg.img_size, "epochs": cfg.epochs},
        "float_accuracy": conv.report["float_accuracy"],
        "int8_accuracy": conv.report["quant_accuracy"],
        "agreement": conv.report["agreement"],
        "test_images": conv.report["num_samples"],
        "model_size_bytes": conv.report["size_bytes"],
        "float_size_bytes": conv.report["float_size_bytes"],
        "epochs_run": result.metrics.get("epochs_run"),
        "best_epoch": result.metrics.get("best_epoch"),
        "time_limited": bool(result.metrics.get("time_limited")),
        "video": {"frames": run_stats["frames"], **{k: v for k, v in video_acc.items() if k != "signs"}, "signs": video_acc["signs"]},
        "fps": run_stats["fps"],
        "latency_ms": run_stats["latency_ms"],
        "stages_s": stages,
        "seconds": round(time.time() - t0, 1),
        "artefacts": {
            "data": str(data), "run": str(out / "run"), "bundle": str(out / "model-int8"), "video": str(video),
            "timeline": str(video.with_suffix(".json")), "events": str(out / "events.jsonl"), "annotated": str(out / "annotated.mp4"),
        },
    }
    write_json(out / "summary.json", summary)
    echo(format_summary(summary))
    return summary


def format_summary(s: Dict[str, Any]) -> str:
    lat = s["latency_ms"]
    v = s["video"]
    return "\n".join([
        "summary",
        f"  test accuracy     float {s['float_accuracy'] * 100:.1f}%   int8 {s['int8_accuracy'] * 100:.1f}%   agreement {s['agreement'] * 100:.1f}%  ({s['test_images']} images)",
        f"  training          {s['epochs_run']} of {s['config']['epochs']} epochs, best {s['best_epoch']}"
        + (f" (stopped to finish within the {s['config']['time_budget']:.0f} s time budget)" if s["time_limited"] else ""),
        f"  model size        {s['model_size_bytes'] / 1e3:.0f} kB int8 ({s['model_size_bytes'] / s['float_size_bytes']:.2f}x of float32)",
        f"  video             {v['frames']} frames, {v['accuracy'] * 100:.1f}% of the {v['sign_frames']} frames showing a sign labelled correctly",
        f"  speed             {s['fps']:.1f} FPS, latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms",
        f"  time              {s['seconds']:.0f} s  (" + ", ".join(f"{k} {v:.0f} s" for k, v in s["stages_s"].items()) + ")",
        f"  artefacts         {Path(s['artefacts']['run']).parent}/",
    ] + (["  (--fast: 8 images per class and one epoch check the pipeline; the accuracy figures mean nothing)"] if s["config"]["fast"] else []))
