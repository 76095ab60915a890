"""Multi-worker training on one machine: images per second per worker and what the exchanges cost.

    python -m benchmarks.multiworker                 # about 3 minutes on 2 cores
    python -m benchmarks.multiworker --epochs 4      # shorter

Trains cnn_small on a generated shapes dataset (``edgesight datasets synth``) twice with the same
options: once on one worker, once as two workers (``--strategy multiworker``, TF_CONFIG on
127.0.0.1, each process on its own port). Two workers sharing one machine's cores cannot be
faster than one; the figures say what the exchange costs, not what two machines gain:

* steady-state step time: the mean ``ms/step`` Keras prints for the epochs after the first (the
  first decodes the images into the cache and traces the step); images per second per worker
  is ``--batch-size`` over it, and the two workers together process twice that;
* the all-reduce alone: the two workers' gradient exchange (one ``CollectiveReduceV2`` of every
  trainable weight of the model, as in a training step, inside a ``tf.function``), timed over
  200 calls in two processes of their own, and its share of the two-worker step;
* the test accuracy of both runs.

Results go to ``results/multiworker.json`` and a table in ``benchmarks/README.md``; the work
folder is ``benchmarks/work/multiworker/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from benchmarks.common import ROOT, machine, run_edgesight, save_result, update_readme_table

WORK = ROOT / "work" / "multiworker"
STEP_RE = re.compile(r"^\s*\d+/\d+ - \S+ - ([\d.]+)(ms|s)/step", re.M)


def _ports(n: int) -> List[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tf_config(ports: List[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def steady_step_ms(log: str) -> float:
    """The mean ms/step Keras printed for every epoch but the first."""
    steps = [float(v) * (1000 if unit == "s" else 1) for v, unit in STEP_RE.findall(log)]
    if len(steps) < 2:
        raise SystemExit("fewer than two epochs in the log: raise --epochs")
    return sum(steps[1:]) / len(steps[1:])


def train_two(args: List[str], out: Path) -> Dict[str, Any]:
    """Two `edgesight train --strategy multiworker` processes; returns their logs and the wall time."""
    ports = _ports(2)
    logs = [out.with_name(f"{out.name}-worker{i}.log") for i in range(2)]
    t0 = time.perf_counter()
    procs = []
    for i in range(2):
        with open(logs[i], "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "edgesight.cli", "train", *args, "--out", str(out), "--overwrite",
                                           "--strategy", "multiworker"], env={**os.environ, "TF_CONFIG": _tf_config(ports, i)},
                                          stdout=f, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    if codes != [0, 0]:
        raise SystemExit(f"multi-worker training failed ({codes}); see {logs[0]} and {logs[1]}")
    return {"seconds": time.perf_counter() - t0, "logs": [log.read_text() for log in logs]}


def allreduce_worker(params: int, calls: int) -> None:
    """One of the two processes timing the gradient all-reduce (TF_CONFIG names it)."""
    from edgesight.training.cluster import read_tf_config, start
    from edgesight.training.tf import import_tensorflow

    cluster = start(read_tf_config(), 120)
    cluster.handshake([params])
    tf = import_tensorflow()
    key = 10_000

    @tf.function
    def exchange(x):
        return cluster._reduce(x, key)

    x = tf.random.uniform([params])
    for _ in range(10):
        exchange(x).numpy()
    cluster.barrier(120)
    t0 = time.perf_counter()
    for _ in range(calls):
        exchange(x).numpy()
    ms = (time.perf_counter() - t0) * 1000 / calls
    cluster.barrier(120)
    print(json.dumps({"rank": cluster.rank, "ms": ms}), flush=True)


def time_allreduce(params: int, calls: int) -> float:
    ports = _ports(2)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.multiworker", "--allreduce-worker", str(params), "--calls", str(calls)],
                              env={**os.environ, "TF_CONFIG": _tf_config(ports, i)}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    rows = [json.loads(line) for out in outs for line in out.splitlines() if line.startswith("{")]
    if len(rows) != 2:
        raise SystemExit(f"the all-reduce workers failed: {outs}")
    return max(r["ms"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=150, help="Images per class of the shapes dataset.")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32, help="Per worker.")
    ap.add_argument("--calls", type=int, default=200, help="All-reduce calls timed.")
    ap.add_argument("--allreduce-worker", type=int, metavar="PARAMS", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.allreduce_worker:
        allreduce_worker(a.allreduce_worker, a.calls)
        return

    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "bench.log"
    data = WORK / f"shapes{a.per_class}"
    if not data.exists():
        run_edgesight(["datasets", "synth", str(data), "--kind", "shapes", "--per-class", str(a.per_class), "--size", str(a.img_size)], log)
    common = [str(data), "--model", "cnn_small", "--img-size", str(a.img_size), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
              "--augment", "none", "--early-stopping", "0", "--seed", "1"]
    one_out, two_out = WORK / "one", WORK / "two"
    with open(log, "a") as f:
        f.write(f"$ edgesight train {' '.join(common)} --out {one_out}\n")
    t0 = time.perf_counter()
    one_log = subprocess.run([sys.executable, "-m", "edgesight.cli", "train", *common, "--out", str(one_out), "--overwrite"],
                             capture_output=True, text=True)
    one_seconds = time.perf_counter() - t0
    if one_log.returncode != 0:
        raise SystemExit(one_log.stdout + one_log.stderr)
    two = train_two(common, two_out)

    one_m = json.loads((one_out / "metrics.json").read_text())
    two_m = json.loads((two_out / "metrics.json").read_text())
    train_images = len(json.loads((one_out / "split.json").read_text())["train"])
    one_ms = steady_step_ms(one_log.stdout)
    two_ms = [steady_step_ms(text) for text in two["logs"]]

    from edgesight.training.tf import import_keras

    params = int(sum(int(w.numpy().size) for w in import_keras().models.load_model(one_out / "model.keras").trainable_weights))
    allreduce_ms = time_allreduce(params, a.calls)

    result = {
        "machine": machine(),
        "command": "python -m benchmarks.multiworker " + " ".join(sys.argv[1:]),
        "dataset": {"kind": "shapes", "per_class": a.per_class, "img_size": a.img_size, "train_images": train_images},
        "model": "cnn_small", "trainable_params": params, "epochs": a.epochs, "batch_size_per_worker": a.batch_size,
        "one_worker": {"step_ms": round(one_ms, 1), "images_per_s": round(a.batch_size * 1000 / one_ms, 1),
                       "phase1_s": one_m["seconds"]["phase1"], "wall_s": round(one_seconds, 1), "accuracy": one_m["accuracy"]},
        "two_workers": {"step_ms": [round(v, 1) for v in two_ms],
                        "images_per_s_per_worker": [round(a.batch_size * 1000 / v, 1) for v in two_ms],
                        "images_per_s_total": round(2 * a.batch_size * 1000 / max(two_ms), 1),
                        "phase1_s": two_m["seconds"]["phase1"], "wall_s": round(two["seconds"], 1), "accuracy": two_m["accuracy"],
                        "distributed": two_m["distributed"]},
        "allreduce": {"ms": round(allreduce_ms, 2), "bytes": params * 4, "calls": a.calls,
                      "share_of_two_worker_step": round(allreduce_ms / max(two_ms), 3)},
    }
    save_result("multiworker", result)
    o, t, r = result["one_worker"], result["two_workers"], result["allreduce"]
    update_readme_table(
        "multiworker",
        ["run", "step (ms, steady)", "images/s per worker", "images/s in all", "all-reduce per step", "phase 1 (s)", "test accuracy"],
        [["1 worker, batch %d" % a.batch_size, o["step_ms"], o["images_per_s"], o["images_per_s"], "-", o["phase1_s"], f"{o['accuracy']:.3f}"],
         ["2 workers on this machine, global batch %d" % (2 * a.batch_size), " / ".join(map(str, t["step_ms"])),
          " / ".join(map(str, t["images_per_s_per_worker"])), t["images_per_s_total"],
          f"{r['ms']} ms ({100 * r['share_of_two_worker_step']:.0f} % of the step; {r['bytes'] / 1e6:.2f} MB)", t["phase1_s"], f"{t['accuracy']:.3f}"]],
        note=f"{machine()['cores']} cores shared by both workers, {train_images} training images, cnn_small "
             f"({params} weights), {a.epochs} epochs; `{result['command'].strip()}`",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
