"""``edgesight benchmark``: invoke latency, preprocessing cost, end-to-end time and memory."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..model.bundle import Bundle, check_model_json
from ..model.interpreter import Backend
from ..model.postprocess import Decider
from ..model.preprocess import frame_to_pixels


def _pcts(ms: List[float]) -> Dict[str, float]:
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4), "mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def benchmark_bundle(
    bundle: Bundle,
    threads: Sequence[int] = (1,),
    runs: int = 200,
    warmup: int = 20,
    frame_size: tuple = (480, 640),
    delegates_factory: Optional[Callable[[], list]] = None,
    backend: Optional[Backend] = None,
) -> Dict[str, Any]:
    """Measure one bundle at each thread count.

    For each thread count: ``warmup`` unmeasured invokes, then ``runs`` measured ones, each on
    a freshly preprocessed synthetic camera frame of ``frame_size`` (height, width).

    Returns:
        ``{"model": ..., "backend": ..., "results": [{"threads", "invoke_ms", "preprocess_ms",
        "end_to_end_ms", "fps_invoke_p50", "peak_rss_mb"}, ...]}``.
    """
    info = bundle.info
    spec = info.preprocess
    rng = np.random.default_rng(0)
    h, w = frame_size
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    from ..model.anomaly import AnomalyDecider, is_anomaly
    from ..model.anomaly_model import open_model

    # An anomaly bundle's alignment is timed with the invoke, its scoring with the decision.
    decider = AnomalyDecider() if is_anomaly(info) else Decider(info.labels)
    results = []
    backend_name = None
    for n in threads:
        clf = open_model(bundle, num_threads=n, delegates=delegates_factory() if delegates_factory else (), output=info.output,
                         input_mean=spec.input_mean[0], input_std=spec.input_std[0], backend=backend,
                         outputs=info.extra.get("outputs"))
        check_model_json(bundle, clf)
        backend_name = f"{clf.backend.name} {clf.backend.version}"
        for i in range(warmup):
            clf.predict(frame_to_pixels(frames[i % len(frames)], spec))
        pre, inv, e2e = [], [], []
        for i in range(runs):
            t0 = time.perf_counter()
            px = frame_to_pixels(frames[i % len(frames)], spec)
            t1 = time.perf_counter()
            clf.set_pixels(px)
            clf.invoke()
            t2 = time.perf_counter()
            decider(clf.output_probabilities())
            t3 = time.perf_counter()
            pre.append((t1 - t0) * 1e3)
            inv.append((t2 - t1) * 1e3)
            e2e.append((t3 - t0) * 1e3)
        ip = _pcts(inv)
        results.append({
            "threads": n,
            "invoke_ms": ip,
            "preprocess_ms": _pcts(pre),
            "end_to_end_ms": _pcts(e2e),
            "fps_invoke_p50": round(1000.0 / ip["p50"], 2) if ip["p50"] > 0 else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        })
    return {
        "model": str(bundle.model_path),
        "backend": backend_name,
        "input": {"shape": [spec.height, spec.width, spec.channels], "frame": [h, w]},
        "runs": runs,
        "warmup": warmup,
        "results": results,
    }


def format_benchmark(rep: Dict[str, Any]) -> str:
    lines = [f"{rep['model']} ({rep['backend']}), {rep['runs']} runs per setting, frames {rep['input']['frame'][1]}x{rep['input']['frame'][0]}",
             f"{'threads':>7}  {'invoke p50':>10} {'p90':>8} {'p99':>8}  {'preproc':>8}  {'end-to-end':>10}  {'FPS':>7}  {'peak RSS':>9}"]
    for r in rep["results"]:
        i = r["invoke_ms"]
        lines.append(f"{r['threads']:>7}  {i['p50']:>8.3f}ms {i['p90']:>6.3f}ms {i['p99']:>6.3f}ms  {r['preprocess_ms']['p50']:>6.3f}ms  "
                     f"{r['end_to_end_ms']['p50']:>8.3f}ms  {1000 / r['end_to_end_ms']['p50']:>7.1f}  {r['peak_rss_mb']:>6.1f} MB")
    return "\n".join(lines)
