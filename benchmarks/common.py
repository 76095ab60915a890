"""Helpers shared by the benchmark scripts: machine description, result files, README tables."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from edgesight.edge.fsutil import write_json, write_text

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
README = ROOT / "README.md"


def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%d")}


def save_result(name: str, result: Dict[str, Any]) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, result)
    return path


def update_readme_table(name: str, header: List[str], rows: List[List[Any]], note: str = "") -> None:
    """Replace the table between ``<!-- name:start -->`` and ``<!-- name:end -->`` in README.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    block = "\n".join(([note, ""] if note else []) + lines)
    text = README.read_text() if README.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), f"{start}\n{block}\n{end}", text, flags=re.S)
    else:
        text += f"\n{start}\n{block}\n{end}\n"
    write_text(README, text)


def load_result(name: str) -> Dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def run_edgesight(args: List[str], log: Path) -> float:
    """Run ``edgesight ARGS`` with its output appended to ``log``; returns the seconds it took.

    Exit status 1 is accepted: ``convert`` exits 1 when the accuracy drop is over --max-drop,
    and its report is still written.
    """
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ edgesight " + " ".join(args) + "\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "edgesight.cli", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"edgesight {args[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0
