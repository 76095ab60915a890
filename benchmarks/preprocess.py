"""Preprocessing cost: edgesight's integer path vs a float normalise-then-quantise path.

    python -m benchmarks.preprocess

For a 640x480 BGR camera frame and each model input (64x64 and 224x224; uint8 and int8 tensors
whose quantisation is the identity on pixels, as ``edgesight convert`` writes them), it times:

* edgesight: ``frame_to_pixels`` (resize, BGR->RGB) then the classifier's input feeder, which
  passes uint8 through and turns int8 into ``pixel ^ 0x80``, never touching float;
* float: the same resize and colour swap, then ``x = pixel / 255`` and
  ``q = round(x / scale) + zero_point`` clipped to the type, the way most examples feed a
  quantised model.

Both must give the same tensor (checked on every timed frame size). Microseconds per frame are
the median of ``--repeats`` batches of ``--frames`` frames, the two paths interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import cv2
import numpy as np

from benchmarks.common import machine, save_result, update_readme_table
from edgesight.edge.model.preprocess import frame_to_pixels
from edgesight.edge.model.quant import input_feeder, quantize
from edgesight.edge.model.spec import PreprocessSpec


def float_path(frame: np.ndarray, size: int, dtype, zero_point: int) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    x = rgb.astype(np.float32) / np.float32(255.0)
    return quantize(x, 1.0 / 255.0, zero_point, dtype)


def time_us(fn: Callable[[], object], frames: int) -> float:
    t0 = time.perf_counter()
    for _ in range(frames):
        fn()
    return 1e6 * (time.perf_counter() - t0) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (5, 5), 0)
    rows: List[Dict] = []
    for size in (64, 224):
        spec = PreprocessSpec(size, size)
        for dtype, zp in ((np.uint8, 0), (np.int8, -128)):
            feed = input_feeder(dtype, 1.0, zp)

            def ours() -> np.ndarray:
                return feed(frame_to_pixels(frame, spec))

            def theirs() -> np.ndarray:
                return float_path(frame, size, dtype, zp)

            identical = bool(np.array_equal(ours(), theirs()))
            t_ours, t_float = [], []
            for _ in range(a.repeats):
                t_ours.append(time_us(ours, a.frames))
                t_float.append(time_us(theirs, a.frames))
            o, f = statistics.median(t_ours), statistics.median(t_float)
            rows.append({"input": f"{size}x{size}x3 {np.dtype(dtype).name}", "edgesight_us": round(o, 1), "float_us": round(f, 1),
                         "speedup": round(f / o, 2), "identical_tensors": identical})
            print(rows[-1], flush=True)
    m = machine()
    save_result("preprocess", {"benchmark": "preprocess", "machine": m, "frame": "640x480 BGR", "frames": a.frames, "repeats": a.repeats,
                               "rows": rows})
    update_readme_table(
        "preprocess",
        ["model input", "edgesight µs/frame", "float normalise + quantise µs/frame", "float / edgesight", "same tensor"],
        [[r["input"], r["edgesight_us"], r["float_us"], f"{r['speedup']:.2f}x", "yes" if r["identical_tensors"] else "**no**"] for r in rows],
        note=f"`python -m benchmarks.preprocess --frames {a.frames} --repeats {a.repeats}` on {m['cpu']} ({m['cores']} cores), {m['date']}; "
             "640x480 BGR frame in, resize + colour swap included in both.",
    )


if __name__ == "__main__":
    main()
