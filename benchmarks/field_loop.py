"""The field loop, measured: a daylight model meets dusk, captures, relabel, merge, retrain.

    python -m benchmarks.field_loop                       # the demo run in /tmp/final-demo
    python -m benchmarks.field_loop --demo DIR            # another demo folder (made if absent)
    python -m benchmarks.field_loop --levers all          # the levers even when the defaults meet the goal

The model is the demo's traffic-sign classifier (``edgesight demo``: cnn_small at 48x48, trained
on generated signs in daylight); its run is converted again with ``edgesight convert --quant
int8`` so the bundle has a drift baseline. Every drive is a generated 20 s dashcam video
(``edgesight datasets synth --video``, 300 frames at 15 fps): the daylight drive of seeds 0-4 and
the dusk drive of the same seeds (``--dusk``: same road, signs and timeline; darker, bluer,
noisier). Each goes through ``edgesight run`` with the demo's settings (``--roi`` the drive's
sign window, ``--threshold 0.5 --smooth 3``) and is scored as the demo scores its video: the
share of frames showing a sign whose reported label is that sign. Drift: the frame of the first
``input drift at frame N`` alert the run logs (the default limits).

The loop: ``run --capture`` on dusk seed 0 with the default capture settings except
``--capture-every`` (wall-clock seconds; a file is read many times faster than real time, so it
is 0.05 s here instead of 5 s); each capture is relabelled from the drive's ground truth (its
``frame`` in ``captures.jsonl`` against the drive's timeline), standing in for the operator on
the relabel page, with the page's own code (``CaptureFolder.relabel``: the file moved into the
folder of its true class, or confirmed there, and recorded); captures showing no sign are
deleted by hand, as an operator would (they are none of the model's classes). Then ``datasets
merge`` into a copy of the demo's training data with ``--run`` (the run's test split kept),
``train --init-from`` the demo's run (its defaults: 5 epochs), ``convert --quant int8``, and
every drive again. The drives whose frames were captured are reported but do not count for the
goal; the others (held out) do.

Levers (``--levers auto``: only when the defaults miss the goal), one training each: more
captures (``--capture-random 0.25``: a quarter of the frames not sampled otherwise), more epochs
(``--epochs 8`` on the default captures), and the default captures of two dusk drives (seeds 0
and 1). The captures of one drive with one setting are made once and shared.

Results go to ``results/field_loop.json`` and a table in ``benchmarks/README.md``; videos,
captures, datasets, runs and bundles to ``benchmarks/work/field_loop/`` (finished steps are
reused on a rerun; delete a folder there, and its entry in ``steps.json``, to redo that step).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import ROOT, machine, run_edgesight, save_result, update_readme_table
from edgesight.edge.fsutil import write_json

WORK = ROOT / "work" / "field_loop"
SEEDS = (0, 1, 2, 3, 4)
GOAL_FRAMES = 300
GOAL_POINTS = 3.0
CAPTURE_EVERY = 0.05
DECISION = ["--threshold", "0.5", "--smooth", "3"]  # the demo's (api/demo.py)
NO_SIGN = "no sign"
# Capture settings beyond --capture-every; the captures of one dusk drive with one setting are
# made once and shared by every variant that merges them, so the levers compare like with like.
CAPTURES = {"default": [], "random-0.25": ["--capture-random", "0.25"]}
# name -> the captures merged ((dusk seed, capture setting), ...) and the extra train options
VARIANTS: Dict[str, Dict[str, Any]] = {
    "defaults": {"captures": ((0, "default"),), "train": [], "lever": "after the loop, defaults"},
    "more-captures": {"captures": ((0, "random-0.25"),), "train": [], "lever": "more captures (--capture-random 0.25)"},
    "more-epochs": {"captures": ((0, "default"),), "train": ["--epochs", "8"], "lever": "more epochs (--epochs 8)"},
    "two-drives": {"captures": ((0, "default"), (1, "default")), "train": [], "lever": "two dusk drives' captures (seeds 0, 1)"},
}


def _steps() -> Dict[str, Any]:
    path = WORK / "steps.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _remember(key: str, value: Any) -> None:
    steps = _steps()
    steps[key] = value
    write_json(WORK / "steps.json", steps)


def video(light: str, seed: int) -> Path:
    """The drive video of ``light`` (day or dusk) and ``seed``, with its timeline beside it."""
    path = WORK / "videos" / f"{light}-{seed}.mp4"
    if not path.with_suffix(".json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        junk = WORK / "videos" / "_signs"
        run_edgesight(["datasets", "synth", str(junk), "--kind", "traffic-signs", "--per-class", "1", "--seed", str(seed),
                       "--video", str(path), *(["--dusk"] if light == "dusk" else [])], WORK / "log.txt")
        shutil.rmtree(junk, ignore_errors=True)
    return path


def convert(run: Path, bundle: Path, key: str) -> float:
    """``edgesight convert RUN --quant int8`` (with its drift baseline); its wall time."""
    steps = _steps()
    if (bundle / "model.json").is_file() and key in steps:
        return steps[key]
    shutil.rmtree(bundle, ignore_errors=True)
    seconds = run_edgesight(["convert", str(run), "--quant", "int8", "--num-calib", "200", "--max-drop", "2", "--out", str(bundle)],
                            WORK / "log.txt")
    if not (bundle / "model.json").is_file():
        raise SystemExit(f"convert wrote no bundle; see {WORK / 'log.txt'}")
    _remember(key, round(seconds, 1))
    return round(seconds, 1)


def drive(bundle: Path, clip: Path, out: Path, capture: Optional[Path] = None, capture_args: Sequence[str] = ()) -> Dict[str, Any]:
    """``edgesight run`` on ``clip`` with the demo's settings: accuracy on sign frames, drift, speed."""
    from edgesight.demo import _video_accuracy

    timeline = json.loads(clip.with_suffix(".json").read_text())
    stats, events, log = out / "stats.json", out / "events.jsonl", out / "run.txt"
    if not stats.is_file() or (capture is not None and not (capture / "captures.jsonl").is_file()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        extra: List[str] = []
        if capture is not None:
            shutil.rmtree(capture, ignore_errors=True)
            (capture.parent / "relabel.json").unlink(missing_ok=True)
            extra = ["--capture", str(capture), "--capture-every", str(CAPTURE_EVERY), *capture_args]
        roi = ",".join(str(v) for v in timeline["roi"])
        run_edgesight(["run", str(bundle), "--source", str(clip), "--roi", roi, *DECISION, "--jsonl", str(events),
                       "--stats-json", str(stats), "--stats-interval", "0", "--quiet", *extra], log)
    s = json.loads(stats.read_text())
    acc = _video_accuracy([json.loads(line) for line in events.read_text().splitlines()], timeline["signs"])
    first = re.search(r"input drift at frame (\d+): ([^\n]*)", log.read_text())
    d = s.get("drift") or {}
    return {
        "video": clip.name, "frames": s["frames"], "fps": round(s["fps"], 1),
        "accuracy": round(acc["accuracy"], 4), "sign_frames": acc["sign_frames"],
        "per_sign": {t["label"]: round(t["correct"] / t["frames"], 3) if t["frames"] else None for t in acc["signs"]},
        "frames_to_drift": int(first.group(1)) + 1 if first else None,
        "drift_reasons": first.group(2).split(" (over the last")[0] if first else None,
        "drift_alerts": d.get("alerts"),
    }


def truth_of(frame: int, signs: Sequence[Dict[str, Any]]) -> str:
    for t in signs:
        if t["start_frame"] <= frame <= t["end_frame"]:
            return t["label"]
    return NO_SIGN


def relabel(capture: Path, clip: Path, labels: List[str]) -> Dict[str, Any]:
    """Every capture put in the folder of the sign its frame shows (the relabel page's own move
    and record), captures of no sign deleted; what was written and what is left to merge."""
    from edgesight.edge.captures import UNCERTAIN_DIR, read_records
    from edgesight.edge.web.relabel import CaptureFolder

    done = capture.parent / "relabel.json"
    if done.is_file():
        return json.loads(done.read_text())
    signs = json.loads(clip.with_suffix(".json").read_text())["signs"]
    folder = CaptureFolder(capture, labels)
    records = [r for r in read_records(capture) if "reason" in r]
    written = {"total": len(records), "by_reason": dict(Counter(r["reason"] for r in records)),
               "uncertain": sum(r["file"].startswith(UNCERTAIN_DIR + "/") for r in records),
               "by_model_label": dict(Counter(r["label"] for r in records)),
               "by_true_label": dict(Counter(truth_of(r["frame"], signs) for r in records))}
    moved = confirmed = deleted = wrong = 0
    for r in records:
        true = truth_of(r["frame"], signs)
        path = capture / r["file"]
        if not path.is_file():
            continue  # deleted for the size cap
        if true == NO_SIGN:
            path.unlink()
            deleted += 1
            continue
        wrong += r["label"] != true
        rec = folder.relabel(r["file"], true)
        if rec["file"] == r["file"]:
            confirmed += 1
        else:
            moved += 1
    used = {p.name: sum(1 for f in p.iterdir() if f.suffix == ".jpg") for p in sorted(capture.iterdir())
            if p.is_dir() and p.name != UNCERTAIN_DIR}
    out = {"written": written, "moved": moved, "confirmed": confirmed, "deleted_no_sign": deleted,
           "model_wrong": wrong, "used": {k: v for k, v in used.items() if v}, "used_total": sum(used.values())}
    write_json(done, out)
    return out


def merge(captures: List[Path], original: Path, data: Path, run: Path) -> Dict[str, int]:
    """A copy of the demo's data with ``captures`` merged (``--run``: the run's test split kept);
    images added per class."""
    marker = data.parent / "merge.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(original, data)
    log = data.parent / "merge.txt"
    log.write_text("")
    for cap in captures:
        run_edgesight(["datasets", "merge", str(cap), "--into", str(data), "--run", str(run)], log)
    if len(re.findall(r"^added \d+ images", log.read_text(), flags=re.M)) != len(captures):
        raise SystemExit(f"merge failed; see {log}")
    split = json.loads((data / "split.json").read_text())
    before = json.loads((run / "split.json").read_text())
    old = {p for name in ("train", "val", "test") for p, _ in before[name]}
    added = Counter(lab for name in ("train", "val") for p, lab in split[name] if p not in old)
    out = {"added": dict(sorted(added.items())), "added_total": sum(added.values()),
           "added_val": sum(1 for p, _ in split["val"] if p not in old),
           "test_kept": sorted(p for p, _ in split["test"]) == sorted(p for p, _ in before["test"])}
    write_json(marker, out)
    return out


def retrain(data: Path, start: Path, out: Path, args: Sequence[str], key: str) -> Dict[str, Any]:
    """``edgesight train DATA --init-from START``; its wall time and what it reports."""
    steps = _steps()
    if not ((out / "model.keras").is_file() and key in steps):
        shutil.rmtree(out, ignore_errors=True)
        seconds = run_edgesight(["train", str(data), "--out", str(out), "--init-from", str(start), *args], out.parent / "train.txt")
        if not (out / "model.keras").is_file():
            raise SystemExit(f"train wrote no model; see {out.parent / 'train.txt'}")
        _remember(key, round(seconds, 1))
    m = json.loads((out / "metrics.json").read_text())
    return {"wall_s": _steps()[key], "epochs_run": m.get("epochs_run"), "test_accuracy": m.get("accuracy"),
            "train_images": sum(json.loads((out / "split.json").read_text())["counts"]["train"].values())}


def all_drives(bundle: Path, where: Path) -> Dict[str, Dict[str, Any]]:
    return {f"{light}-{seed}": drive(bundle, video(light, seed), where / f"{light}-{seed}") for seed in SEEDS for light in ("day", "dusk")}


def captured(seed: int, setting: str, labels: List[str]) -> Dict[str, Any]:
    """The captures of dusk drive ``seed`` with capture ``setting``, relabelled (made once)."""
    where = WORK / "captures" / f"dusk-{seed}-{setting}"
    bundle_day = WORK / "daylight" / "bundle"
    run = drive(bundle_day, video("dusk", seed), where / "run", capture=where / "captures", capture_args=CAPTURES[setting])
    return {"folder": str(where / "captures"), "capture_run_fps": run["fps"],
            "capture_args": ["--capture-every", str(CAPTURE_EVERY), *CAPTURES[setting]],
            **relabel(where / "captures", video("dusk", seed), labels)}


def loop(name: str, spec: Dict[str, Any], demo: Path, day: Dict[str, Dict[str, Any]], labels: List[str]) -> Dict[str, Any]:
    """One pass of the loop from the daylight model; its figures."""
    where = WORK / name
    where.mkdir(parents=True, exist_ok=True)
    caps = {f"dusk-{seed}": captured(seed, setting, labels) for seed, setting in spec["captures"]}
    used: Counter = Counter()
    for c in caps.values():
        used.update(c["used"])
    merged = merge([Path(c["folder"]) for c in caps.values()], demo / "data", where / "data", demo / "run")
    trained = retrain(where / "data", demo / "run", where / "run", spec["train"], f"{name}:train")
    convert_s = convert(where / "run", where / "bundle", f"{name}:convert")
    drives = all_drives(where / "bundle", where / "drives")
    held_out = [s for s in SEEDS if f"dusk-{s}" not in caps]
    gaps = {f"dusk-{s}": round((day[f"day-{s}"]["accuracy"] - drives[f"dusk-{s}"]["accuracy"]) * 100, 1) for s in SEEDS}
    mean_gap = round(sum(gaps[f"dusk-{s}"] for s in held_out) / len(held_out), 1)
    return {
        "lever": spec["lever"], "captured_on": list(caps), "held_out": [f"dusk-{s}" for s in held_out],
        "train_args": ["--init-from", "RUN", *spec["train"]],
        "captures": caps, "captures_used": dict(sorted(used.items())), "captures_used_total": sum(used.values()),
        "merge": merged, "retrain": trained, "convert_s": convert_s, "drives": drives,
        "points_below_daylight": gaps, "points_below_daylight_held_out_mean": mean_gap,
        "points_below_daylight_held_out_worst": max(gaps[f"dusk-{s}"] for s in held_out),
        "goal_met": mean_gap <= GOAL_POINTS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("/tmp/final-demo"), help="an 'edgesight demo' output folder (made if absent)")
    ap.add_argument("--levers", choices=("auto", "all", "none"), default="auto",
                    help="the levers beyond the defaults: when the defaults miss the goal (auto), always, or never")
    args = ap.parse_args()
    logging.getLogger("edgesight").setLevel(logging.ERROR)
    WORK.mkdir(parents=True, exist_ok=True)
    if "load_average" not in _steps():  # when the work was done, not when a rerun reads it back
        _remember("load_average", [round(x, 2) for x in os.getloadavg()])
    demo = args.demo
    if not (demo / "run" / "model.keras").is_file():
        run_edgesight(["demo", "--out", str(demo)], WORK / "log.txt")
    labels = (demo / "run" / "labels.txt").read_text().split()

    # The daylight model: the demo's run, converted again so its bundle has a drift baseline.
    convert_day = convert(demo / "run", WORK / "daylight" / "bundle", "daylight:convert")
    day = all_drives(WORK / "daylight" / "bundle", WORK / "daylight" / "drives")
    for k, v in day.items():
        print(f"daylight model, {k}: {v['accuracy'] * 100:.1f} % of {v['sign_frames']} sign frames; drift after {v['frames_to_drift']} frames")

    chosen = ["defaults"]
    results: Dict[str, Any] = {}
    results["defaults"] = loop("defaults", VARIANTS["defaults"], demo, day, labels)
    if args.levers == "all" or (args.levers == "auto" and not results["defaults"]["goal_met"]):
        chosen += [n for n in VARIANTS if n != "defaults"]
    for name in chosen[1:]:
        results[name] = loop(name, VARIANTS[name], demo, day, labels)
    for name in chosen:
        r = results[name]
        print(f"{name}: {r['captures_used_total']} captures used, retrain {r['retrain']['wall_s']} s, convert {r['convert_s']} s; "
              + ", ".join(f"{k} {v['accuracy'] * 100:.1f} %" for k, v in r["drives"].items()))

    flagged = [day[f"dusk-{s}"]["frames_to_drift"] for s in SEEDS]
    day_alerts = [day[f"day-{s}"]["frames_to_drift"] for s in SEEDS]
    result = {
        "machine": {**machine(), "load_average_at_start": _steps()["load_average"]},
        "command": "python -m benchmarks.field_loop " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "demo": str(demo),
        "settings": {"decision": " ".join(DECISION), "roi": json.loads(video("day", 0).with_suffix(".json").read_text())["roi"],
                     "capture_every_s": CAPTURE_EVERY, "drive_frames": 300, "seeds": list(SEEDS)},
        "goals": {"frames_to_drift": GOAL_FRAMES, "points_below_daylight": GOAL_POINTS},
        "daylight": {"convert_s": convert_day, "drives": day},
        "loops": results,
        "summary": {
            "frames_to_drift_dusk": flagged, "drift_goal_met": all(f is not None and f <= GOAL_FRAMES for f in flagged),
            "daylight_drift_alerts": sum(a is not None for a in day_alerts),
            "day_accuracy": {f"day-{s}": day[f"day-{s}"]["accuracy"] for s in SEEDS},
            "dusk_accuracy_before": {f"dusk-{s}": day[f"dusk-{s}"]["accuracy"] for s in SEEDS},
            "dusk_accuracy_after": {n: {f"dusk-{s}": r["drives"][f"dusk-{s}"]["accuracy"] for s in SEEDS} for n, r in results.items()},
            "loop_goal_met": {n: r["goal_met"] for n, r in results.items()},
        },
    }
    path = save_result("field_loop", result)
    readme(result)
    print(f"wrote {path}; drift goal met: {result['summary']['drift_goal_met']}; loop goal met: {result['summary']['loop_goal_met']}")


def _pc(x: Optional[float]) -> str:
    return "-" if x is None else f"{x * 100:.1f}"


def readme(result: Dict[str, Any]) -> None:
    day = result["daylight"]["drives"]
    m = result["machine"]

    def seeds(drives: Dict[str, Any], light: str, key: str = "accuracy") -> str:
        return " / ".join((_pc(drives[f"{light}-{s}"][key]) if key == "accuracy" else str(drives[f"{light}-{s}"][key] or "-"))
                          for s in SEEDS)

    rows = [["daylight (the demo's model)", "-", "-", "-", result["daylight"]["convert_s"], seeds(day, "day"), seeds(day, "dusk"),
             seeds(day, "dusk", "frames_to_drift"), "-"]]
    for name, r in result["loops"].items():
        used = ", ".join(f"{k} {v}" for k, v in r["captures_used"].items())
        written = sum(c["written"]["total"] for c in r["captures"].values())
        rows.append([r["lever"], f"{written} written on {', '.join(r['captured_on'])}; {r['captures_used_total']} used ({used})",
                     r["retrain"]["wall_s"], r["retrain"]["epochs_run"], r["convert_s"], seeds(r["drives"], "day"),
                     seeds(r["drives"], "dusk"), seeds(r["drives"], "dusk", "frames_to_drift"),
                     f"{r['points_below_daylight_held_out_mean']} ({r['points_below_daylight_held_out_worst']}) on "
                     f"{', '.join(h.split('-')[1] for h in r['held_out'])}: " + ("**met**" if r["goal_met"] else "**missed**")])
    s = result["summary"]
    fps = [c["capture_run_fps"] for r in result["loops"].values() for c in r["captures"].values()]
    faster = f"{min(fps) / 15:.0f}-{max(fps) / 15:.0f}x" if round(min(fps) / 15) != round(max(fps) / 15) else f"{min(fps) / 15:.0f}x"
    note = (f"`{result['command']}` on {m['cpu']} ({m['cores']} cores shared with other jobs, load average "
            f"{m['load_average_at_start'][0]} at the start), {m['date']}. Drives of 300 frames, seeds "
            f"{', '.join(str(x) for x in SEEDS)}, through `edgesight run --roi {','.join(str(v) for v in result['settings']['roi'])} "
            f"{result['settings']['decision']}`; accuracy: the share of frames showing a sign labelled correctly (one sign is "
            f"about 26 of a drive's 260 sign frames, 10 points). Captures: the defaults but `--capture-every {CAPTURE_EVERY}` "
            f"(wall-clock seconds; the capture runs played the file {faster} faster than real time); relabelled from the drive's ground truth, frames "
            f"showing no sign deleted; merged into a copy of the demo's data with `--run` (its test split kept). Retrain: "
            f"`train --init-from` the demo's run, wall time with start-up; `convert --quant int8`. Dusk drives flagged for drift "
            f"after {', '.join(str(f) for f in s['frames_to_drift_dusk'])} frames (goal: {GOAL_FRAMES}); daylight drives flagged: "
            f"{s['daylight_drift_alerts']} of {len(SEEDS)}. Goal after the loop: on the dusk drives whose frames were not "
            f"captured (held out), accuracy within {GOAL_POINTS:.0f} points of the daylight model on the daylight drive of the "
            f"same seed, on average (the worst drive in brackets). One training per row; training is not bit-reproducible.")
    update_readme_table("field_loop", ["model", "captures", "retrain s", "epochs", "convert s", "day accuracy % (seeds 0 / 1 / 2 / 3 / 4)",
                                       "dusk accuracy %", "dusk frames to drift alert",
                                       "points below daylight, held-out dusk drives: mean (worst)"], rows, note)


if __name__ == "__main__":
    main()
