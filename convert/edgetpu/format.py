"""The Edge TPU report as a short terminal table."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

from .ops_table import LATEST_RUNTIME


def format_edgetpu_report(report: Dict[str, Any]) -> str:
    """A short terminal table: per op type the count, how many map, and why the others do not.

    Args:
        report: an ``edgetpu_report`` result (or the same loaded back from JSON).

    Returns:
        The table as text, without a trailing newline.
    """
    ops = report["ops"]
    first = report.get("first_unmapped")
    head = f"Edge TPU: {report['num_mapped']}/{report['num_ops']} ops mapped (runtime {report.get('runtime_version', LATEST_RUNTIME)})"
    if first is not None:
        head += f"; first unmapped: #{first} {ops[first]['op']}"
    lines = [head, f"{'op':<26}{'count':>6}{'edgetpu':>9}{'cpu':>5}  why not mapped"]
    order: List[str] = []
    for o in ops:
        if o["op"] not in order:
            order.append(o["op"])
    for name in order:
        group = [o for o in ops if o["op"] == name]
        mapped = sum(1 for o in group if o["mapped"])
        # An op's own problem says more than "follows an unmapped op": it would still block
        # mapping once the earlier op is fixed.
        reasons = Counter(o.get("own_reason") or o["reason"] for o in group if not o["mapped"])
        why = "; ".join(r if n == 1 else f"{r} (x{n})" for r, n in reasons.most_common())
        lines.append(f"{name:<26}{len(group):>6}{mapped:>9}{len(group) - mapped:>5}  {why}".rstrip())
    for side in ("inputs", "outputs"):
        for t in report["io"][side]:
            quant = f" scale {t['scale']} zero_point {t['zero_point']}" if t.get("scale") is not None else ""
            lines.append(f"{side[:-1]} {t['name']}: {t['dtype']} {t['shape']}{quant}")
    lines.extend(f"warning: {w}" for w in report.get("warnings", []))
    compiler = report.get("compiler")
    if compiler:
        if compiler.get("compiled"):
            lines.append(f"compiled: {compiler.get('path')}" + (f" (edgetpu_compiler {compiler['version']})" if compiler.get("version") else ""))
        else:
            lines.append(f"not compiled: {compiler.get('reason') or 'edgetpu_compiler did not produce a model'}")
    return "\n".join(lines)
