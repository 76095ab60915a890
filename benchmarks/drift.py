"""Drift: frames until a dusk drive is flagged, and no alert on daylight drives.

    python -m benchmarks.drift                          # the demo run in /tmp/final-demo, seeds 0-4
    python -m benchmarks.drift --demo DIR --seeds 0,1   # another demo folder (made with --fast if absent)

The model is the demo's traffic-sign classifier (``edgesight demo``: trained on generated sign
images in daylight). Its run folder is converted again with ``edgesight convert --quant int8``,
which writes the drift baseline into model.json (from the int8 model's outputs and inputs on the
test split). For each seed, a 20 s daylight drive and the dusk drive of the same seed (same road,
signs and timeline; darker, bluer, noisier: ``make_drive_video(dusk=True)``) go through the
camera loop (``run_loop`` with the demo's window and ``RunConfig``'s drift defaults), the
daylight drive looped ``--day-loops`` times; and both in one run, daylight then dusk, to
see how many dusk frames it takes to move a window full of daylight. Recorded per drive: the frame at which the drift
alert was first raised (goal on dusk: within 300 frames), the alerts raised (goal on daylight:
none), the largest figures daylight reached (the margin under the limits), the figures at the
end, and the share of frames showing a sign that were labelled correctly.

The cost of drift per frame (brightness and contrast of the model input plus the window update)
is timed apart, on the drive's own inputs at the model's size and at 224 x 224.

Results go to ``results/drift.json`` and a table in ``benchmarks/README.md``; the bundle and the
videos to ``benchmarks/work/drift/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np

from benchmarks.common import ROOT, machine, run_edgesight, save_result, update_readme_table

WORK = ROOT / "work" / "drift"
GOAL_FRAMES = 300
SIZE = (640, 360)


def bundle_from(demo: Path, log: Path) -> Path:
    """The demo's run converted again (with a baseline); the demo is made with --fast if absent."""
    run = demo / "run"
    if not (run / "model.keras").is_file():
        run_edgesight(["demo", "--fast", "--out", str(demo)], log)
    bundle = WORK / "bundle"
    run_edgesight(["convert", str(run), "--quant", "int8", "--num-calib", "200", "--max-drop", "2", "--out", str(bundle)], log)
    if not (bundle / "model.json").is_file():
        raise SystemExit(f"convert wrote no bundle; see {log}")
    return bundle


def drive(bundle: Path, video: Path, loops: int) -> Dict[str, Any]:
    """Run the camera loop on ``video`` (``loops`` times over); the drift figures frame by frame."""
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.runner import run_loop
    from edgesight.edge.model.bundle import load_bundle
    from edgesight.edge.model.interpreter import TFLiteClassifier
    from edgesight.edge.sinks import Sink
    from edgesight.edge.sources import open_source
    from edgesight.training.synth import drive_roi

    timeline = json.loads(video.with_suffix(".json").read_text())
    n = timeline["frames"]
    b = load_bundle(bundle)
    model = TFLiteClassifier(b.model_path, num_threads=os.cpu_count())
    cfg = RunConfig(threshold=0.5, smooth=3, hysteresis=0.1, roi=drive_roi(SIZE), stats_interval=0, loop=loops > 1,
                    max_frames=n * loops)
    figures: List[Dict[str, Any]] = []
    labels: List[str] = []
    raised: List[int] = []

    class Record(Sink):
        def write(self, frame, result, annotated) -> None:
            labels.append(result.label)

    def on_result(result, stats) -> None:
        d = stats.drift.to_dict()  # the figures up to the frame before this one
        figures.append(d)
        if d["alert"] and (len(figures) == 1 or not figures[-2]["alert"]):
            raised.append(d["since_frame"])

    with open_source(str(video), loop=loops > 1, compute_threads=model.cpu_threads) as src:
        stats = run_loop(model, b.info, src, [Record()], cfg, on_result=on_result, printer=lambda s: None)
    final = stats.drift.to_dict()
    if final["alert"] and (not figures or not figures[-1]["alert"]):
        raised.append(final["since_frame"])
    shown = correct = 0
    for sign in timeline["signs"]:
        for f in range(sign["start_frame"], sign["end_frame"] + 1):
            for k in range(loops):
                i = f + k * n
                if i < len(labels):
                    shown += 1
                    correct += labels[i] == sign["label"]

    def peak(key: str) -> Any:
        values = [abs(d[key]) for d in figures[1:] + [final] if d[key] is not None]
        return round(max(values), 3) if values else None

    return {
        "video": str(video), "frames": stats.frames, "alerts": final["alerts"],
        "first_alert_frame": raised[0] if raised else None,
        "frames_to_alert": raised[0] + 1 if raised else None,
        "reasons_at_alert": next((d["reasons"] for d in figures + [final] if d["alert"]), []),
        "peak": {k: peak(k) for k in ("psi_scores", "psi_classes", "brightness_shift", "contrast_shift")},
        "final": {k: final[k] for k in ("psi_scores", "psi_classes", "brightness", "brightness_shift", "contrast",
                                        "contrast_shift", "low_share", "alert", "reasons")},
        "accuracy": round(correct / shown, 4) if shown else None,
    }


def day_then_dusk(day: Path, dusk: Path, out: Path) -> Path:
    """One video: the daylight drive, then the dusk drive (its timeline beside it)."""
    writer = None
    for video in (day, dusk):
        cap = cv2.VideoCapture(str(video))
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (image.shape[1], image.shape[0]))
            writer.write(image)
        cap.release()
    writer.release()
    a, b = (json.loads(v.with_suffix(".json").read_text()) for v in (day, dusk))
    signs = a["signs"] + [{**t, "start_frame": t["start_frame"] + a["frames"], "end_frame": t["end_frame"] + a["frames"]} for t in b["signs"]]
    out.with_suffix(".json").write_text(json.dumps({**a, "frames": a["frames"] + b["frames"], "signs": signs, "lighting": "day, then dusk"}))
    return out


def overhead_us(bundle: Path, video: Path, frames: int = 300) -> Dict[str, float]:
    """Microseconds per frame of drift: input statistics plus the window update (median of 5)."""
    from edgesight.edge.loop.drift import DriftMonitor
    from edgesight.edge.model.bundle import load_bundle
    from edgesight.edge.model.preprocess import frame_to_pixels
    from edgesight.training.synth import drive_roi

    info = load_bundle(bundle).info
    cap = cv2.VideoCapture(str(video))
    images = []
    while len(images) < frames:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(info.num_classes), len(images)).astype(np.float32)
    out = {}
    for name, spec in ((f"{info.preprocess.height}x{info.preprocess.width}", info.preprocess),
                       ("224x224", type(info.preprocess)(height=224, width=224))):
        pixels = [frame_to_pixels(im, spec, drive_roi(SIZE)) for im in images]
        runs = []
        for _ in range(5):
            monitor = DriftMonitor(info.baseline)
            t0 = time.perf_counter()
            for i, (px, p) in enumerate(zip(pixels, probs)):
                monitor.add(p, monitor.input_stats(px), i)
            runs.append((time.perf_counter() - t0) / len(pixels) * 1e6)
        out[name] = round(float(np.median(runs)), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("/tmp/final-demo"), help="an 'edgesight demo' output folder (made with --fast if absent)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="drive seeds, comma-separated")
    ap.add_argument("--day-loops", type=int, default=3, help="times the daylight drive is played (20 s, 300 frames each)")
    args = ap.parse_args()
    logging.getLogger("edgesight").setLevel(logging.ERROR)  # the alerts are recorded, not printed
    from edgesight.edge.loop.config import RunConfig
    from edgesight.training.synth import make_drive_video

    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "log.txt"
    log.write_text("")
    bundle = bundle_from(args.demo, log)
    baseline = json.loads((bundle / "model.json").read_text())["baseline"]
    cfg = RunConfig()
    rows, seeds = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        videos = {}
        for light in ("day", "dusk"):
            videos[light] = WORK / f"{light}-{seed}.mp4"
            make_drive_video(videos[light], seconds=20.0, fps=15.0, size=SIZE, seed=seed, dusk=light == "dusk")
        day, dusk = drive(bundle, videos["day"], args.day_loops), drive(bundle, videos["dusk"], 1)
        both = drive(bundle, day_then_dusk(videos["day"], videos["dusk"], WORK / f"day-then-dusk-{seed}.mp4"), 1)
        switch = json.loads(videos["day"].with_suffix(".json").read_text())["frames"]
        first = both["first_alert_frame"]
        both["alert_before_dusk"] = first is not None and first < switch
        both["dusk_frames_to_alert"] = first - switch + 1 if first is not None and first >= switch else None
        seeds.append({"seed": seed, "day": day, "dusk": dusk, "day_then_dusk": both})
        p = day["peak"]
        rows.append([seed, f"{day['frames']}", f"{day['alerts']}",
                     f"{p['psi_scores']:.2f} / {p['psi_classes']:.2f}", f"{p['brightness_shift']:.2f} / {p['contrast_shift']:.2f}",
                     dusk["frames_to_alert"] or "not flagged", "; ".join(r.split(" (")[0] for r in dusk["reasons_at_alert"]) or "-",
                     "alert in daylight" if both["alert_before_dusk"] else both["dusk_frames_to_alert"] or "not flagged",
                     f"{dusk['final']['psi_scores']:.2f} / {dusk['final']['psi_classes']:.2f}",
                     f"{day['accuracy'] * 100:.1f} / {dusk['accuracy'] * 100:.1f}"])
        print(f"seed {seed}: daylight {day['alerts']} alerts in {day['frames']} frames (peaks {p}); "
              f"dusk flagged after {dusk['frames_to_alert']} frames: {dusk['reasons_at_alert']}; "
              f"after the switch from daylight: {both['dusk_frames_to_alert']} frames ({both['reasons_at_alert']})")
    cost = overhead_us(bundle, WORK / f"day-{seeds[0]['seed']}.mp4")
    flagged = [s["dusk"]["frames_to_alert"] for s in seeds]
    switched = [None if s["day_then_dusk"]["alert_before_dusk"] else s["day_then_dusk"]["dusk_frames_to_alert"] for s in seeds]
    result = {
        "machine": machine(),
        "command": "python -m benchmarks.drift " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "bundle": str(bundle),
        "baseline": baseline,
        "limits": {"drift_window": cfg.drift_window, "drift_threshold": cfg.drift_threshold, "drift_shift": cfg.drift_shift},
        "seeds": seeds,
        "summary": {
            "dusk_flagged": sum(f is not None for f in flagged), "dusk_drives": len(flagged),
            "dusk_frames_to_alert_max": max((f for f in flagged if f is not None), default=None),
            "switch_flagged": sum(f is not None for f in switched),
            "switch_frames_to_alert_max": max((f for f in switched if f is not None), default=None),
            "daylight_alerts": sum(s["day"]["alerts"] for s in seeds),
            "daylight_frames": sum(s["day"]["frames"] for s in seeds),
            "goal_met": all(f is not None and f <= GOAL_FRAMES for f in flagged + switched) and not any(s["day"]["alerts"] for s in seeds),
        },
        "overhead_us_per_frame": cost,
    }
    path = save_result("drift", result)
    m, s = result["machine"], result["summary"]
    note = (f"`{result['command']}` on {m['cpu']} ({m['cores']} cores), {m['date']}. Limits: the defaults, window "
            f"{cfg.drift_window} frames, PSI {cfg.drift_threshold}, shift {cfg.drift_shift} sd. Baseline: {baseline['images']} "
            f"{baseline['split']} images. Dusk flagged on {s['dusk_flagged']} of {s['dusk_drives']} drives, after at most "
            f"{s['dusk_frames_to_alert_max']} frames (goal: {GOAL_FRAMES}); after a switch from daylight in one run on "
            f"{s['switch_flagged']} of {s['dusk_drives']}, after at most {s['switch_frames_to_alert_max']} dusk frames; daylight: {s['daylight_alerts']} alerts in "
            f"{s['daylight_frames']} frames. Drift costs " + ", ".join(f"{v} µs per frame at {k}" for k, v in cost.items()) + ".")
    update_readme_table("drift", ["seed", "daylight frames", "daylight alerts", "daylight peak score / label-mix PSI",
                                  "daylight peak abs(shift) brightness / contrast (sd)", "dusk frames to alert",
                                  "dusk alert reasons", "daylight, then dusk: dusk frames to alert", "dusk score / label-mix PSI (end)",
                                  "accuracy day / dusk %"], rows, note)
    print(f"wrote {path}; goal met: {s['goal_met']}")


if __name__ == "__main__":
    main()
