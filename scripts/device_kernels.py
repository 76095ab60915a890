"""Runs a model bundle's int8 kernels on given input tensors, for scripts/device-check.sh.

    python scripts/device_kernels.py frames VIDEO --out FRAMES_DIR
    python scripts/device_kernels.py decode BUNDLE VIDEO_OR_FRAMES_DIR [--roi X,Y,W,H] --out INPUTS.npz
    python scripts/device_kernels.py invoke BUNDLE INPUTS.npz --out OUTPUTS.npz

``frames`` writes every frame of a video as a PNG (``00000.png``, ``00001.png``, ...: sorted
order is frame order), so that two machines can start from the same pixels: PNG is lossless,
while a video decoder's output depends on its build. ``decode`` reads a video with OpenCV, or
a folder of images the way the ``edgesight run`` folder source reads it, and writes the model
input tensors that ``edgesight run`` feeds (edgesight's own ``frame_to_pixels``, then the
bundle's input conversion). ``invoke`` runs the model on such tensors twice, one
single-threaded LiteRT interpreter each: with the default kernels (the XNNPACK delegate) and
with the reference kernels (``OpResolverType.BUILTIN_REF``), and saves the raw output tensors.
The device check decodes on both machines and invokes on x86-64 and inside the arm64 root on
the *same* (x86-64) tensors, so scripts/device_compare.py can tell differences of decoding from
differences of the kernels. The files carry a ``meta`` JSON string: the machine, library
versions (with the FFmpeg avcodec and libpng that OpenCV was built with), the model's sha256,
its labels, output quantisation and the int8 logits tensor feeding its softmax.

Inside a chroot, mount /proc and /sys first: XNNPACK reads the CPU's features from /sys, and
without them it picks other kernels, whose outputs differ from the ones it gives with /sys.

Needs only numpy, OpenCV, ai-edge-litert and edgesight, which a device's installed venv has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgesight.edge.model.bundle import load_bundle
from edgesight.edge.model.preprocess import frame_to_pixels
from edgesight.edge.model.quant import input_feeder
from edgesight.edge.sources.folder import ImageFolderSource

RESOLVERS = (("default", OpResolverType.AUTO), ("reference", OpResolverType.BUILTIN_REF))


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict:
    try:
        from importlib.metadata import version
        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - a version is context, never a reason to fail
        litert = "unknown"
    build = cv2.getBuildInformation()

    def built_with(name: str) -> str:
        m = re.search(rf"^\s*{name}:\s*(.+)$", build, re.MULTILINE)
        if not m:
            return "unknown"
        v = re.search(r"\((?:ver )?([^)]*)\)", m.group(1))  # "YES (60.31.102)", "build (ver 1.6.43)"
        return v.group(1) if v else m.group(1).strip()

    return {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "ai_edge_litert": litert,
            "opencv_ffmpeg_avcodec": built_with("avcodec"), "opencv_png": built_with("PNG")}


def _quant(d: dict) -> dict:
    scale, zero_point = d.get("quantization", (0.0, 0))
    return {"index": int(d["index"]), "name": d["name"], "dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point), "shape": [int(x) for x in d["shape"]]}


def logits_tensor(model_path: str, output_kind: str):
    """The quantised tensor holding the model's logits, with why it was chosen; None when none is.

    In a model that ends in a softmax it is the softmax's input, the output of the final
    FULLY_CONNECTED (with a calibrated model, the temperature is baked into it). Found from the
    op list where this LiteRT exposes it, else as the tensor named after the ``predictions``
    layer with the output's shape; a model whose output is the logits (``output: logits``) has
    them in its output tensor.
    """
    it = Interpreter(model_path=model_path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    tensors = {int(t["index"]): t for t in it.get_tensor_details()}
    out = it.get_output_details()[0]
    if output_kind == "logits":
        return dict(_quant(out), found="the model's output (bundle output: logits)")
    ops = getattr(it, "_get_ops_details", None)
    if ops is not None:
        try:
            for op in ops():
                if op["op_name"] == "SOFTMAX" and int(op["inputs"][0]) in tensors:
                    return dict(_quant(tensors[int(op["inputs"][0])]), found="input of the SOFTMAX op")
        except Exception:  # noqa: BLE001 - fall back to names
            pass
    shape = [int(x) for x in out["shape"]]
    for t in sorted(tensors.values(), key=lambda t: -int(t["index"])):
        if "predictions" in t["name"] and [int(x) for x in t["shape"]] == shape and np.dtype(t["dtype"]).kind in "iu":
            return dict(_quant(t), found="tensor named after the predictions layer")
    return None


def _meta(bundle, extra: dict) -> np.ndarray:
    meta = {"versions": _versions(), "model_sha256": _sha256(bundle.model_path)}
    meta.update(extra)
    return np.array(json.dumps(meta))


def _video_frames(path: str):
    """(index, name, BGR frame) of every frame of a video, as OpenCV decodes it; the codec's FourCC."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"device_kernels: error: cannot open {path}")
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    codec = "".join(chr((fourcc >> (8 * k)) & 0xFF) for k in range(4)).strip("\0")

    def frames():
        index = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield index, None, frame
                index += 1
        finally:
            cap.release()

    return frames(), codec


def _folder_frames(path: str, target):
    """(index, file name, BGR frame) of every image of a folder, read by edgesight's folder source."""
    src = ImageFolderSource(path, target=target)
    try:
        while True:
            frame = src.read()
            if frame is None:
                break
            yield frame.index, os.path.basename(frame.path), frame.image
    finally:
        src.close()
    if src.skipped:
        raise SystemExit(f"device_kernels: error: {src.skipped} unreadable image(s) in {path}")


def frames(a) -> int:
    """Every frame of a video as a lossless PNG named by its index."""
    os.makedirs(a.out, exist_ok=True)
    it, codec = _video_frames(a.video)
    n = 0
    for index, _, frame in it:
        if not cv2.imwrite(os.path.join(a.out, f"{index:05d}.png"), frame):
            print(f"device_kernels: error: cannot write {a.out}/{index:05d}.png", file=sys.stderr)
            return 1
        n += 1
    if not n:
        print(f"device_kernels: error: no frames decoded from {a.video}", file=sys.stderr)
        return 1
    print(f"device_kernels: {n} frames of {a.video} ({codec}, OpenCV {cv2.__version__}) written to {a.out} as PNG")
    return 0


def decode(a) -> int:
    bundle = load_bundle(a.bundle)
    spec = bundle.info.preprocess
    roi = tuple(int(v) for v in a.roi.split(",")) if a.roi else None
    it = Interpreter(model_path=str(bundle.model_path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    d = it.get_input_details()[0]
    scale, zero_point = d["quantization"]
    feed = input_feeder(np.dtype(d["dtype"]), scale, zero_point, spec.input_mean[0], spec.input_std[0])
    if os.path.isdir(a.source):
        # As `edgesight run` opens a folder: large images decoded reduced unless --roi is given.
        source, codec = _folder_frames(a.source, None if roi else spec.size), "images"
    else:
        source, codec = _video_frames(a.source)
    tensors, indices, names = [], [], []
    for index, name, frame in source:
        tensors.append(np.asarray(feed(frame_to_pixels(frame, spec, roi))).reshape([int(x) for x in d["shape"]][1:]))
        indices.append(int(index))
        names.append(name)
    if not tensors:
        print(f"device_kernels: error: no frames read from {a.source}", file=sys.stderr)
        return 1
    meta = {"roi": list(roi) if roi else None, "source": codec, "frames": indices,
            "names": names if any(names) else None}
    np.savez_compressed(a.out, inputs=np.stack(tensors), meta=_meta(bundle, meta))
    print(f"device_kernels: {len(tensors)} input tensors from {a.source} ({codec}, {platform.machine()})")
    return 0


def invoke(a) -> int:
    bundle = load_bundle(a.bundle)
    inputs = np.load(a.inputs)["inputs"]
    path = str(bundle.model_path)
    outputs, seconds = {}, {}
    for name, resolver in RESOLVERS:
        it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        rows, t0 = [], time.perf_counter()
        for x in inputs:
            it.set_tensor(i["index"], x[None].astype(i["dtype"], copy=False))
            it.invoke()
            rows.append(it.get_tensor(o["index"])[0].copy())
        seconds[name] = round(time.perf_counter() - t0, 2)
        outputs[name] = np.stack(rows)
    extra = {"output": _quant(o), "output_kind": bundle.info.output, "labels": list(bundle.info.labels),
             "logits": logits_tensor(path, bundle.info.output), "seconds": seconds}
    np.savez_compressed(a.out, meta=_meta(bundle, extra), **outputs)
    print(f"device_kernels: {len(inputs)} frames with the default and the reference kernels on {platform.machine()} "
          f"({seconds['default']} s, {seconds['reference']} s)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frames", help="write every frame of a video as a PNG")
    f.add_argument("video"), f.add_argument("--out", required=True)
    d = sub.add_parser("decode", help="decode a video or a folder of frames into the model's input tensors")
    d.add_argument("bundle"), d.add_argument("source"), d.add_argument("--roi"), d.add_argument("--out", required=True)
    v = sub.add_parser("invoke", help="run the default and the reference kernels on input tensors")
    v.add_argument("bundle"), v.add_argument("inputs"), v.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    return {"frames": frames, "decode": decode, "invoke": invoke}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
