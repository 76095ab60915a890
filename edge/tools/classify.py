"""Batch classification of image files with a model bundle (``edgesight classify``)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..model.bundle import Bundle
from ..model.interpreter import TFLiteClassifier
from ..model.postprocess import Decider
from ..model.preprocess import ImageReadError, is_image_path, read_image, prepare_image


def expand_paths(items: Iterable[str]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Files, folders (recursively, images only, sorted) and glob patterns -> image paths.

    Returns:
        ``(paths, problems)`` where problems are ``(item, reason)`` for arguments that matched
        nothing.
    """
    out: List[Path] = []
    problems: List[Tuple[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_path(q) and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                problems.append((item, "folder has no images"))
            out += found
        elif p.is_file():
            out.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not found:
                problems.append((item, "pattern matched no files"))
            out += found
        else:
            problems.append((item, "no such file or folder"))
    return out, problems


def classify_paths(
    bundle: Bundle,
    paths: Sequence[Path],
    threads: Optional[int] = None,
    top_k: int = 3,
    threshold: float = 0.0,
    model: Optional[TFLiteClassifier] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Tuple[List[Dict], List[Tuple[str, str]]]:
    """Classify image files one by one.

    Returns:
        ``(results, skipped)``: a dict per readable image (``path``, ``label``, ``score``,
        ``top_k`` as a list of ``{"label", "score"}``) and ``(path, reason)`` per unreadable one.
    """
    info = bundle.info
    spec = info.preprocess
    clf = model or TFLiteClassifier(bundle.model_path, num_threads=threads, output=info.output, input_mean=spec.input_mean[0], input_std=spec.input_std[0])
    results: List[Dict] = []
    skipped: List[Tuple[str, str]] = []
    decide = Decider(info.labels, threshold=threshold, k=top_k)
    for path in paths:
        try:
            pixels = prepare_image(read_image(path, spec.color), spec)
        except ImageReadError as e:
            skipped.append((str(path), str(e).split(": ", 1)[-1]))
        else:
            label, score, top, _ = decide(clf.predict(pixels))
            results.append({"path": str(path), "label": label, "score": round(score, 6), "top_k": [{"label": lab, "score": round(v, 6)} for lab, v in top]})
        if progress:
            progress(1)
    return results, skipped


def format_results(results: List[Dict], fmt: str) -> str:
    """``table``, ``json`` (a list of objects) or ``csv`` (path,label,score,top_k)."""
    if fmt == "json":
        return json.dumps(results, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label", "score", "top_k"])
        for r in results:
            w.writerow([r["path"], r["label"], f"{r['score']:.6f}", ";".join(f"{t['label']}:{t['score']:.6f}" for t in r["top_k"])])
        return buf.getvalue().rstrip("\n")
    width = max([len("path")] + [len(os.path.relpath(r["path"])) for r in results])
    lines = [f"{'path':<{width}}  {'label':<16} {'score':>7}"]
    for r in results:
        lines.append(f"{os.path.relpath(r['path']):<{width}}  {r['label']:<16} {r['score']:>7.4f}")
    return "\n".join(lines)
