"""Compares the arm64 and the x86-64 runs of scripts/device-check.sh and writes the result.

    python scripts/device_compare.py ARM64.jsonl X86.jsonl ARM64-BENCH.json X86-BENCH.json --out RESULT.json

It passes when the labels agree on at least 98 % of frames and, on those frames, every score is
within 0.02 (ARM and x86 int8 kernels round differently, so scores are compared with a
tolerance, not bit for bit).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np

MIN_SAME_LABELS = 0.98
MAX_SCORE_DIFF = 0.02


def _events(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return {e["frame"]: e for e in map(json.loads, f)}


def _invoke_p50(path: str):
    with open(path, encoding="utf-8") as f:
        rows = json.load(f).get("results") or [{}]
    return (rows[0].get("invoke_ms") or {}).get("p50")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arm64"), ap.add_argument("x86"), ap.add_argument("arm64_bench"), ap.add_argument("x86_bench")
    ap.add_argument("--profile", default="rpi5"), ap.add_argument("--cpu", default=""), ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    arm, x86 = _events(a.arm64), _events(a.x86)
    if not x86 or set(arm) != set(x86):
        print(f"device-check: error: the arm64 run reported {len(arm)} frames, this machine {len(x86)}", file=sys.stderr)
        return 1
    frames = sorted(x86)
    same = [f for f in frames if arm[f]["label"] == x86[f]["label"]]
    diffs = np.array([abs(arm[f]["score"] - x86[f]["score"]) for f in same]) if same else np.zeros(0)
    share = len(same) / len(frames)
    result = {
        "profile": a.profile,
        "emulated_cpu": a.cpu,
        "host": platform.machine(),
        "frames": len(frames),
        "labels_equal": len(same),
        "labels_equal_share": round(share, 4),
        "score_diff": {"p50": round(float(np.percentile(diffs, 50)), 4), "p95": round(float(np.percentile(diffs, 95)), 4),
                       "max": round(float(diffs.max()), 4), f"frames_over_{MAX_SCORE_DIFF}": int((diffs > MAX_SCORE_DIFF).sum())}
        if len(diffs) else None,
        "arm64_invoke_ms_p50_emulated": _invoke_p50(a.arm64_bench),
        "host_invoke_ms_p50": _invoke_p50(a.x86_bench),
        "criteria": {"min_labels_equal_share": MIN_SAME_LABELS, "max_score_diff": MAX_SCORE_DIFF},
    }
    result["passed"] = bool(share >= MIN_SAME_LABELS and len(diffs) and diffs.max() <= MAX_SCORE_DIFF)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    d = result["score_diff"] or {}
    print(f"device-check: {len(same)} of {len(frames)} frames have the same label on arm64 ({a.cpu}) and {result['host']} "
          f"({share:.1%}); score differences p50 {d.get('p50')}, p95 {d.get('p95')}, max {d.get('max')} "
          f"({d.get(f'frames_over_{MAX_SCORE_DIFF}')} frames over {MAX_SCORE_DIFF}); invoke p50 "
          f"{result['arm64_invoke_ms_p50_emulated']} ms emulated vs {result['host_invoke_ms_p50']} ms here")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
