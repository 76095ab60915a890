"""The QC-parts goal over draws of the generator and input sizes, with the time each size costs.

    python -m benchmarks.anomaly_draws                       # pcb, seeds 0-2, 224 and 448 (about 45 min)
    python -m benchmarks.anomaly_draws --seeds 1 --sizes 448

``benchmarks/anomaly.py --only qc`` measures one draw of the generator (seed 0) at the default
input size. A draw decides how faint its cracks and misprints come out, so here the same CLI
chain runs for generated PCBs (the harder part) of several seeds (``write_qc_parts`` with that
seed and the same counts: 300 good training images, val 75 good + 10 per defect kind, test 75
good + 20 per kind, 224x224 images) at each ``--img-size``: ``edgesight train DATA/train --task
anomaly --method padim --defects DATA/val [--img-size N]``, ``edgesight convert RUN``,
``edgesight evaluate`` of the run (float) and of the bundle (int8) on ``DATA/test``.
The images stay 224x224: a larger ``--img-size`` enlarges them in preprocessing, so that the
feature grid is finer (14x14 cells at 224, 28x28 at 448), not that the camera sees more.

Time per frame: each size's int8 pcb bundle and int8 EfficientNet-Lite0 classifiers at 224 and
at every other size (trained for one epoch on the seed-0 test folders as 6 classes), through
``edgesight.Classifier`` on one decoded test frame, the models taking turns frame by frame, with
1 and 2 interpreter threads; the median of ``--frames`` calls at each model's best thread count.
Goals: AUROC >= 0.98 (int8) on every draw; time at most 2x the classifier's.

Work goes to ``benchmarks/work/anomaly/qc/pcb/`` (``data_seed<S>``, ``padim_seed<S>_<N>``);
finished steps are reused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from benchmarks.anomaly import QC_GOAL, QC_SEED, SPEED_GOAL, WORK, _classifier_bundle, _pct, _qc_data, _qc_run
from benchmarks.common import machine, run_edgesight, save_result, update_readme_table

DEFAULT_SIZE = 224


def _row(seed: int, size: int) -> Dict[str, Any]:
    if seed == QC_SEED and size == DEFAULT_SIZE:  # the anomaly benchmark's own row
        return _qc_run("pcb", "padim")
    return _qc_run("pcb", "padim", seed=seed, train_args=["--img-size", str(size)], name=f"_seed{seed}_{size}")


def _classifier(size: int) -> Path:
    if size == DEFAULT_SIZE:
        return _classifier_bundle()[0]
    work = WORK / f"classifier{size}"
    if not (work / "int8" / "conversion_report.json").exists():
        print(f"[speed] training a {size}x{size} classifier bundle for the comparison ...", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        data = _qc_data("pcb") / "test"
        run_edgesight(["train", str(data), "--model", "efficientnet_lite0", "--img-size", str(size), "--epochs", "1",
                       "--fine-tune-epochs", "0", "--out", str(work / "run"), "--overwrite"], work / "log.txt")
        run_edgesight(["convert", str(work / "run"), "--out", str(work / "int8")], work / "log.txt")
    return work / "int8"


def speed(anomaly: Dict[int, Path], frames: int, threads: Sequence[int]) -> Dict[str, Any]:
    """Median ms per call of each size's anomaly bundle (``anomaly``: size -> bundle) and of the
    classifiers, at each one's best thread count, the bundles taking turns."""
    import cv2

    from edgesight.edge.classifier import Classifier

    sizes = sorted(anomaly)
    bundles = {f"classifier {s}": _classifier(s) for s in sorted({DEFAULT_SIZE, *sizes})}
    bundles.update({f"anomaly padim {s}": b for s, b in anomaly.items()})
    frame = cv2.imread(str(sorted((_qc_data("pcb") / "test" / "good").glob("*.png"))[0]))
    best: Dict[str, Dict[str, float]] = {}
    for t in threads:
        clfs = {n: Classifier(b, threads=t) for n, b in bundles.items()}
        times: Dict[str, List[float]] = {n: [] for n in clfs}
        for i in range(10 + frames):
            for n, clf in clfs.items():
                t0 = time.perf_counter()
                clf(frame)
                if i >= 10:
                    times[n].append(time.perf_counter() - t0)
        for n, clf in clfs.items():
            ms = 1000 * statistics.median(times[n])
            print(f"[speed] {n}, {t} thread(s): {ms:.2f} ms per frame", flush=True)
            if n not in best or ms < best[n]["ms_p50"]:
                best[n] = {"ms_p50": round(ms, 3), "threads": t}
            clf.close()
    ratios = {s: {"vs_classifier_224": round(best[f"anomaly padim {s}"]["ms_p50"] / best[f"classifier {DEFAULT_SIZE}"]["ms_p50"], 2),
                  "vs_classifier_same_size": round(best[f"anomaly padim {s}"]["ms_p50"] / best[f"classifier {s}"]["ms_p50"], 2)} for s in sizes}
    return {"frames": frames, "threads": list(threads), "bundles": {n: str(b) for n, b in bundles.items()}, "best": best, "ratios": ratios}


def table(out: Dict[str, Any]) -> None:
    sizes, seeds = out["sizes"], out["seeds"]
    header = ["--img-size"] + [f"seed {s}: AUROC float / int8 %" for s in seeds] + ["int8 per kind, worst draw", "every draw ≥ 98 % (int8)",
                                                                                    "ms per frame (vs classifier 224 / same size)"]
    rows = []
    for size in sizes:
        runs = [r for r in out["rows"] if r["size"] == size]
        worst = min(runs, key=lambda r: r["int8"]["auroc"])
        sp = out["speed"]["best"].get(f"anomaly padim {size}") if out.get("speed") else None
        ratio = out["speed"]["ratios"][size] if sp else None
        rows.append([size] + [f"{_pct(r['float']['auroc'])} / {_pct(r['int8']['auroc'])}" for r in sorted(runs, key=lambda r: r["seed"])]
                    + [f"seed {worst['seed']}: " + ", ".join(f"{k} {_pct(v)}" for k, v in worst["int8"]["per_kind_auroc"].items()),
                       "yes" if all(r["int8"]["auroc"] >= QC_GOAL for r in runs) else "**no**",
                       "-" if sp is None else f"{sp['ms_p50']:.1f} ({ratio['vs_classifier_224']:.2f}x / {ratio['vs_classifier_same_size']:.2f}x)"])
    m = out["machine"]
    note = (f"`python -m benchmarks.anomaly_draws` on {m['cpu']} ({m['cores']} cores shared with other jobs), {m['date']}. Generated PCBs "
            f"(`datasets synth --kind qc-parts`, 224x224 images) of each seed, PaDiM, `train --task anomaly --defects DATA/val --img-size N`, "
            f"`convert`, `evaluate`: test image AUROC of the run (float) and the bundle (int8). Time: int8 bundles on one decoded frame, "
            f"median of {out['speed']['frames'] if out.get('speed') else '-'} calls at each model's best thread count; the classifiers are int8 "
            f"EfficientNet-Lite0 at 224 and at the same size. Goals: AUROC ≥ {100 * QC_GOAL:.0f} % on every draw, time ≤ {SPEED_GOAL:.0f}x.")
    update_readme_table("anomaly_draws", header, rows, note=note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="generator seeds")
    ap.add_argument("--sizes", default="224,448", help="--img-size values")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    seeds, sizes = [int(s) for s in a.seeds.split(",")], [int(s) for s in a.sizes.split(",")]
    rows = []
    for size in sizes:
        for seed in seeds:
            r = _row(seed, size)
            rows.append({"seed": seed, "size": size, **{k: r[k] for k in ("float", "int8", "commands", "bundle")},
                         **{k: r[k] for k in ("train_s", "convert_s") if k in r}})
            print(f"[pcb seed {seed}, {size}x{size}] test AUROC float {r['float']['auroc']:.4f}, int8 {r['int8']['auroc']:.4f}", flush=True)
    out = {"machine": machine(), "seeds": seeds, "sizes": sizes, "goal_auroc": QC_GOAL, "goal_ratio": SPEED_GOAL, "rows": rows,
           "speed": speed({size: Path(_row(QC_SEED, size)["bundle"]) for size in sizes}, a.frames, [int(t) for t in a.threads.split(",")])}
    save_result("anomaly_draws", out)
    table(out)


if __name__ == "__main__":
    main()
