"""Memory: peak resident set size of ``edgesight run`` on each benchmark bundle.

    python -m benchmarks.memory

Each bundle (the int8 ``cnn_small`` and EfficientNet-Lite0 of ``benchmarks.runtime_fps``) runs
in its own process, as on a device: ``edgesight run BUNDLE --source synthetic:640x480@1000
--max-frames 300 --headless --quiet``, plus a second time with ``--save`` and ``--jsonl`` sinks.
The figure is the child's peak RSS (``ru_maxrss``) read after it exits. A baseline process
that only imports the runtime and exits shows what Python, NumPy, OpenCV and LiteRT cost
before any model is loaded. The Raspberry Pi Zero 2 W has 512 MB, of which Raspberry Pi OS
Lite leaves roughly 400 MB to programs; figures from an x86-64 machine are a guide to an aarch64
Pi's, not equal to them (library sizes differ).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from benchmarks.common import machine, save_result, update_readme_table

PI_ZERO_2W_FREE_MB = 400


def peak_rss_mb(cmd: List[str]) -> float:
    """Peak RSS of one child process, in MB (``ru_maxrss`` of a fresh ``RUSAGE_CHILDREN``)."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "if p.returncode: sys.exit(p.stderr[-2000:])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return int(out.stdout.strip()) / 1024.0  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    a = ap.parse_args()
    from benchmarks.runtime_fps import make_bundles, make_video

    cli = [sys.executable, "-m", "edgesight.cli"]
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundles = make_bundles(tmp, make_video(tmp / "calib.mp4", 40))
        base = peak_rss_mb([sys.executable, "-c", "import cv2, numpy, ai_edge_litert.interpreter, edgesight.cli, edgesight.edge.loop.runner, edgesight.edge.sources, edgesight.edge.sinks"])
        rows.append({"bundle": "(runtime imports only)", "model_mb": 0.0, "headless_mb": round(base, 1), "with_sinks_mb": None})
        for name, bundle in bundles.items():
            run = [*cli, "run", str(bundle), "--source", "synthetic:640x480@1000", "--max-frames", str(a.frames), "--headless", "--quiet"]
            headless = peak_rss_mb(run)
            sinks = peak_rss_mb([*run, "--save", str(tmp / f"{name}.mp4"), "--jsonl", str(tmp / f"{name}.jsonl")])
            rows.append({"bundle": f"{name} int8", "model_mb": round((bundle / "model.tflite").stat().st_size / 1e6, 2),
                         "headless_mb": round(headless, 1), "with_sinks_mb": round(sinks, 1)})
            print(rows[-1], flush=True)
    for r in rows:
        r["share_of_pi_zero_2w"] = round(max(r["headless_mb"], r["with_sinks_mb"] or 0) / PI_ZERO_2W_FREE_MB, 3)
    m = machine()
    save_result("memory", {"benchmark": "memory", "machine": m, "frames": a.frames, "pi_zero_2w_free_mb": PI_ZERO_2W_FREE_MB, "rows": rows})
    update_readme_table(
        "memory",
        ["process", "model file", "peak RSS headless", "peak RSS with --save + --jsonl", "share of a Pi Zero 2 W's ~400 MB"],
        [[r["bundle"], f"{r['model_mb']:.2f} MB" if r["model_mb"] else "-", f"{r['headless_mb']:.0f} MB",
          f"{r['with_sinks_mb']:.0f} MB" if r["with_sinks_mb"] else "-", f"{100 * r['share_of_pi_zero_2w']:.0f} %"] for r in rows],
        note=f"`python -m benchmarks.memory --frames {a.frames}` on {m['cpu']} ({m['cores']} cores, {os.uname().machine}), {m['date']}; "
             "each row is its own process; 640x480 synthetic frames.",
    )


if __name__ == "__main__":
    main()
