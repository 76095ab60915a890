"""File arguments and output formats of ``edgesight classify`` (the classifying itself is
:meth:`edgesight.edge.classifier.Classifier.classify_files`)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..model.preprocess import is_image_path


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
