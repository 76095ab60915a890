"""Compares the arm64 and the x86-64 runs of scripts/device-check.sh and writes the result.

    python scripts/device_compare.py ARM64.jsonl X86.jsonl ARM64-BENCH.json X86-BENCH.json \\
        --inputs X86-INPUTS.npz ARM64-INPUTS.npz --kernels X86-KERNELS.npz ARM64-KERNELS.npz \\
        [--video ARM64-VIDEO.jsonl X86-VIDEO.jsonl --video-inputs X86.npz ARM64.npz \\
         --host-on-arm64-video-inputs HOST-KERNELS.npz] --out RESULT.json

Each comparison takes the label (top class) of every frame and, on frames where the labels
agree, the top score:

- ``end_to_end``: ``edgesight run --source FRAMES_DIR`` on each machine, on the same folder of
  PNG files (every frame of the video, written once on x86-64). PNG is lossless, so both
  machines start from the same pixels; the runs are matched frame by frame on the events'
  ``frame`` and file name, and ``inputs`` says whether the model input tensors that each
  machine makes of them are identical.
- ``same_input_default_kernels``: the model on the x86-64 input tensors of those frames on both
  machines with LiteRT's default kernels (the XNNPACK delegate), the ones ``edgesight run`` uses.
- ``same_input_reference_kernels``: the same with LiteRT's reference kernels
  (``OpResolverType.BUILTIN_REF``), which must give bit-identical outputs.
- ``video_end_to_end`` (with ``--video``; reported, not a criterion): ``edgesight run`` on the
  video itself. Each machine decodes the video with its own OpenCV/FFmpeg build, a lossy
  decoder's output differs between builds, and so the model inputs differ (``inputs``). With
  ``--host-on-arm64-video-inputs``, ``arm64_inputs_on_host`` runs this machine's default kernels
  on the tensors the arm64 root decoded: where it gives the arm64 run's labels and scores, the
  decoding explains the differences.

``versions`` records Python, numpy, OpenCV (with the FFmpeg avcodec and libpng it was built with)
and ai-edge-litert of both machines.

A small change of the input, or a different rounding in an optimised int8 kernel, can move an
int8 tensor by a step. Where that tensor is the logits (the final FULLY_CONNECTED's output that
feeds the softmax, temperature included in a calibrated model), one step of it moves a
probability by up to a quarter of its scale: ``logits_tensor`` gives that scale and
``probability_per_step``, and each largest score difference is given as the number of logits
steps it takes at least (allowing one step of the output's own rounding).

It passes when, end to end on the PNG frames, the labels agree on at least 98 % of frames and
every score difference is at most 0.02, and the reference kernels are bit-identical on the same
input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys

import numpy as np

MIN_SAME_LABELS = 0.98
MAX_SCORE_DIFF = 0.02
REPORT_OVER = 0.02


def _events(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return {e["frame"]: e for e in map(json.loads, f)}


def _invoke_p50(path: str):
    with open(path, encoding="utf-8") as f:
        rows = json.load(f).get("results") or [{}]
    return (rows[0].get("invoke_ms") or {}).get("p50")


def _load(path: str):
    data = np.load(path)
    return data, json.loads(str(data["meta"]))


def _probabilities(raw: np.ndarray, meta: dict) -> np.ndarray:
    """Raw output tensors -> probabilities, as edgesight's runtime computes them."""
    out = meta["output"]
    x = raw.astype(np.float32)
    if np.dtype(out["dtype"]).kind in "iu" and out["scale"]:
        x = (x - np.float32(out["zero_point"])) * np.float32(out["scale"])
    if meta.get("output_kind") == "logits":
        x = np.exp(x - x.max(axis=1, keepdims=True))
        x /= x.sum(axis=1, keepdims=True)
    return x


def _compare(arm_labels, x86_labels, arm_scores, x86_scores, logits: dict, output_step: float) -> dict:
    """Labels and top-score differences of two runs, frame by frame."""
    arm_labels, x86_labels = np.asarray(arm_labels), np.asarray(x86_labels)
    same = arm_labels == x86_labels
    diffs = np.abs(np.asarray(arm_scores, np.float64) - np.asarray(x86_scores, np.float64))[same]
    result = {"frames": int(len(same)), "labels_equal": int(same.sum()), "labels_equal_share": round(float(same.mean()), 4),
              "score_diff": None}
    if len(diffs):
        d = {"p50": round(float(np.percentile(diffs, 50)), 4), "p95": round(float(np.percentile(diffs, 95)), 4),
             "max": round(float(diffs.max()), 6), f"frames_over_{REPORT_OVER}": int((diffs > REPORT_OVER).sum())}
        step = (logits or {}).get("probability_per_step")
        if step:
            d["max_in_logit_steps"] = round(float(diffs.max()) / step, 2)
            d["max_logit_steps_at_least"] = max(0, math.ceil(round((float(diffs.max()) - output_step) / step, 6)))
        result["score_diff"] = d
    return result


def _same_input(name: str, arm: np.ndarray, x86: np.ndarray, arm_meta: dict, x86_meta: dict, logits, output_step) -> dict:
    pa, px = _probabilities(arm, arm_meta), _probabilities(x86, x86_meta)
    result = _compare(pa.argmax(1), px.argmax(1), pa.max(1), px.max(1), logits, output_step)
    steps = np.abs(arm.astype(np.float64) - x86.astype(np.float64)).reshape(len(arm), -1).max(axis=1)
    result.update({"frames_bit_identical": int((steps == 0).sum()), "bit_identical": bool((steps == 0).all()),
                   "max_output_steps": int(steps.max()) if len(steps) else 0,
                   "seconds": {"arm64_emulated": arm_meta["seconds"][name], "host": x86_meta["seconds"][name]}})
    return result


def _input_diff(x86: np.ndarray, arm: np.ndarray) -> dict:
    """How far the model input tensors of the two machines are apart, frame by frame."""
    n = len(x86)
    delta = np.abs(arm.astype(np.int32) - x86.astype(np.int32)).reshape(n, -1)
    return {"frames": n, "frames_identical": int((delta.max(axis=1) == 0).sum()), "max_abs_diff": int(delta.max()),
            "mean_abs_diff": round(float(delta.mean()), 4)}


def _on_host(arm: dict, frames, host_k, host_meta, logits, output_step) -> dict:
    """The arm64 run's events against this machine's default kernels on other tensors."""
    probs, names = _probabilities(host_k["default"], host_meta), host_meta["labels"]
    result = _compare([arm[f]["label"] for f in frames], [names[i] for i in probs.argmax(1)],
                      [arm[f]["score"] for f in frames], probs.max(1), logits, output_step)
    # The events' scores carry six decimals.
    result["frames_score_equal"] = int(sum(
        arm[f]["label"] == names[i] and abs(arm[f]["score"] - p) < 1e-5
        for f, i, p in zip(frames, probs.argmax(1), probs.max(1))))
    return result


def _fmt_diff(c: dict) -> str:
    d = c["score_diff"] or {}
    text = f"p50 {d.get('p50')}, p95 {d.get('p95')}, max {d.get('max')} ({d.get(f'frames_over_{REPORT_OVER}')} frames over {REPORT_OVER}"
    steps = d.get("max_logit_steps_at_least")
    if steps:
        text += f"; the max takes at least {steps} steps of the logits tensor"
    elif steps == 0:
        text += "; the max is less than one step of the logits tensor"
    return text + ")"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arm64", help="the arm64 run's events on the PNG frames (--jsonl)")
    ap.add_argument("x86", help="this machine's events on the same PNG frames")
    ap.add_argument("arm64_bench"), ap.add_argument("x86_bench")
    ap.add_argument("--inputs", nargs=2, metavar=("X86", "ARM64"), required=True,
                    help="input tensors each machine made of the PNG frames (device_kernels.py decode)")
    ap.add_argument("--kernels", nargs=2, metavar=("X86", "ARM64"), required=True,
                    help="raw outputs on the x86-64 input tensors from each machine (device_kernels.py invoke)")
    ap.add_argument("--video", nargs=2, metavar=("ARM64", "X86"), help="each machine's events on the video itself")
    ap.add_argument("--video-inputs", nargs=2, metavar=("X86", "ARM64"),
                    help="input tensors each machine decoded from the video (device_kernels.py decode)")
    ap.add_argument("--host-on-arm64-video-inputs", metavar="NPZ",
                    help="this machine's outputs on the tensors the arm64 root decoded from the video")
    ap.add_argument("--profile", default="rpi5"), ap.add_argument("--cpu", default=""), ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"device-check: error: {msg}", file=sys.stderr)
        return 1

    arm, x86 = _events(a.arm64), _events(a.x86)
    if not x86 or set(arm) != set(x86):
        return fail(f"the arm64 run reported {len(arm)} frames, this machine {len(x86)}")
    frames = sorted(x86)
    (x86_in, x86_in_meta), (arm_in, arm_in_meta) = _load(a.inputs[0]), _load(a.inputs[1])
    (x86_k, x86_meta), (arm_k, arm_meta) = _load(a.kernels[0]), _load(a.kernels[1])
    if x86_meta["model_sha256"] != arm_meta["model_sha256"]:
        return fail("the arm64 root's model is not the one run here (sha256 differs)")
    n = len(x86_in["inputs"])
    if len(arm_in["inputs"]) != n or len(x86_k["default"]) != n or len(arm_k["default"]) != n:
        return fail("the input tensors or kernel outputs of the two machines have different frame counts")
    # Both runs and both tensor files must hold the same files under the same frame numbers.
    names = x86_in_meta.get("names") or []
    if not names:
        return fail(f"{a.inputs[0]} was not made from a folder of frames (device_kernels.py decode BUNDLE FRAMES_DIR)")
    if len(frames) != n or x86_in_meta.get("frames") != frames or arm_in_meta.get("frames") != frames \
            or arm_in_meta.get("names") != names:
        return fail(f"the runs reported frames {frames[0]}..{frames[-1]} ({len(frames)}), the input tensors {n}: they do not line up")
    for i, f in enumerate(frames):
        files = {os.path.basename(arm[f].get("path") or ""), os.path.basename(x86[f].get("path") or ""), names[i]}
        if len(files) != 1:
            return fail(f"frame {f} is {' / '.join(sorted(files))} on the two machines: the frames do not line up")

    logits = x86_meta.get("logits")
    if logits:
        logits = dict(logits)
        # d p / d z = p (1 - p) <= 1/4 for the class's own logit, so one step of scale s moves a
        # probability by at most s / 4.
        logits["probability_per_step"] = round(0.25 * logits["scale"], 4) if logits.get("scale") else None
        logits.pop("index", None)
    out = x86_meta["output"]
    output_step = out["scale"] if (np.dtype(out["dtype"]).kind in "iu" and x86_meta.get("output_kind") != "logits") else 0.0

    end_to_end = _compare([arm[f]["label"] for f in frames], [x86[f]["label"] for f in frames],
                          [arm[f]["score"] for f in frames], [x86[f]["score"] for f in frames], logits, output_step)
    end_to_end["source"] = f"{n} PNG frames ({names[0]} .. {names[-1]}), the same files on both machines"
    end_to_end["frames_aligned"] = True
    default = _same_input("default", arm_k["default"], x86_k["default"], arm_meta, x86_meta, logits, output_step)
    reference = _same_input("reference", arm_k["reference"], x86_k["reference"], arm_meta, x86_meta, logits, output_step)
    inputs = dict(_input_diff(x86_in["inputs"], arm_in["inputs"]), roi=x86_in_meta.get("roi"))

    video = None
    if a.video:
        varm, vx86 = _events(a.video[0]), _events(a.video[1])
        if not vx86 or set(varm) != set(vx86):
            return fail(f"on the video the arm64 run reported {len(varm)} frames, this machine {len(vx86)}")
        vframes = sorted(vx86)
        video = _compare([varm[f]["label"] for f in vframes], [vx86[f]["label"] for f in vframes],
                         [varm[f]["score"] for f in vframes], [vx86[f]["score"] for f in vframes], logits, output_step)
        if a.video_inputs:
            (vx_in, vx_meta), (va_in, va_meta) = _load(a.video_inputs[0]), _load(a.video_inputs[1])
            if len(vx_in["inputs"]) != len(va_in["inputs"]):
                return fail("the two machines decoded different numbers of frames from the video")
            vin = _input_diff(vx_in["inputs"], va_in["inputs"])
            video["fourcc"] = vx_meta.get("source")
            video["decoders"] = {side: {k: m["versions"].get(k) for k in ("opencv", "opencv_ffmpeg_avcodec")}
                                 for side, m in (("arm64", va_meta), ("host", vx_meta))}
            video["inputs"] = vin
            # The PNG frames were written from this machine's decoding of the video.
            video["host_decoding_equals_png_frames"] = bool(np.array_equal(vx_in["inputs"], x86_in["inputs"]))
            if a.host_on_arm64_video_inputs:
                host_k, host_meta = _load(a.host_on_arm64_video_inputs)
                if len(host_k["default"]) != len(vframes):
                    return fail(f"{a.host_on_arm64_video_inputs}: {len(host_k['default'])} frames, the arm64 video run {len(vframes)}")
                video["arm64_inputs_on_host"] = _on_host(varm, vframes, host_k, host_meta, logits, output_step)
            dec = video["decoders"]
            text = (f"Each machine decodes the video ({video['fourcc']}) itself: OpenCV {dec['arm64']['opencv']} "
                    f"(avcodec {dec['arm64']['opencv_ffmpeg_avcodec']}) in the arm64 root, OpenCV "
                    f"{dec['host']['opencv']} (avcodec {dec['host']['opencv_ffmpeg_avcodec']}) here. Their model "
                    f"inputs are identical on {vin['frames_identical']} of {vin['frames']} frames, up to "
                    f"{vin['max_abs_diff']} grey levels apart.")
            on_host = video.get("arm64_inputs_on_host")
            if on_host:
                text += (f" This machine's kernels on the arm64 root's decoded inputs give the arm64 run's label and "
                         f"score on {on_host['frames_score_equal']} of {on_host['frames']} frames.")
            video["explanation"] = text

    def max_diff(c):
        return (c["score_diff"] or {}).get("max")

    checks = {
        "end_to_end_labels_equal_share": end_to_end["labels_equal_share"] >= MIN_SAME_LABELS,
        "end_to_end_score_diff_max": max_diff(end_to_end) is not None and max_diff(end_to_end) <= MAX_SCORE_DIFF,
        "same_input_reference_kernels_bit_identical": reference["bit_identical"],
    }
    versions = {"arm64": arm_meta["versions"], "host": x86_meta["versions"]}
    result = {
        "profile": a.profile,
        "emulated_cpu": a.cpu,
        "host": platform.machine(),
        "frames": len(frames),
        "versions": versions,
        "logits_tensor": logits,
        "inputs": inputs,
        "end_to_end": end_to_end,
        "same_input_default_kernels": default,
        "same_input_reference_kernels": reference,
        "video_end_to_end": video,
        "arm64_invoke_ms_p50_emulated": _invoke_p50(a.arm64_bench),
        "host_invoke_ms_p50": _invoke_p50(a.x86_bench),
        "criteria": {"applies_to": "end_to_end on the PNG frames, and the reference kernels on the same input",
                     "min_labels_equal_share_end_to_end": MIN_SAME_LABELS,
                     "max_score_diff_end_to_end": MAX_SCORE_DIFF,
                     "reference_kernels_bit_identical_on_same_input": True,
                     "score_diff_frames_counted_over": REPORT_OVER},
        "checks": checks,
        "passed": all(checks.values()),
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    e = end_to_end
    step = f"scale {logits['scale']:.4f}, one step moves a probability by up to {logits['probability_per_step']}" if logits and logits.get("scale") else "not found"
    v = {side: f"OpenCV {m['opencv']}, numpy {m['numpy']}, ai-edge-litert {m['ai_edge_litert']}" for side, m in versions.items()}
    print(f"device-check: arm64: {v['arm64']}; {result['host']}: {v['host']}")
    print(f"device-check: PNG frames' input tensors: {inputs['frames_identical']} of {n} frames identical on arm64 and {result['host']}, "
          f"largest difference {inputs['max_abs_diff']} levels")
    print(f"device-check: end to end on the PNG frames: {e['labels_equal']} of {e['frames']} labels equal ({e['labels_equal_share']:.1%}); score diff {_fmt_diff(e)}")
    print(f"device-check: same input, default kernels: {default['labels_equal']} of {default['frames']} labels equal, "
          f"{default['frames_bit_identical']} frames bit-identical, up to {default['max_output_steps']} output step(s) apart; score diff {_fmt_diff(default)}")
    print(f"device-check: same input, reference kernels: {reference['frames_bit_identical']} of {reference['frames']} frames bit-identical")
    if video:
        print(f"device-check: the video (reported, not a criterion): {video['labels_equal']} of {video['frames']} labels equal; "
              f"score diff {_fmt_diff(video)}")
        if video.get("explanation"):
            print(f"device-check:   {video['explanation']}")
    print(f"device-check: logits tensor (int8 input of the softmax): {step}; invoke p50 "
          f"{result['arm64_invoke_ms_p50_emulated']} ms emulated ({a.cpu}) vs {result['host_invoke_ms_p50']} ms here")
    failed = [k for k, ok in checks.items() if not ok]
    d = e["score_diff"] or {}
    print(f"device-check: {'PASSED' if result['passed'] else 'FAILED (' + ', '.join(failed) + ')'}: on the PNG frames, "
          f"labels {e['labels_equal_share']:.1%} equal (>= {MIN_SAME_LABELS:.0%}), largest score difference {d.get('max')} "
          f"(<= {MAX_SCORE_DIFF}); reference kernels {'bit-identical' if reference['bit_identical'] else 'NOT bit-identical'} "
          f"on the same input")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
