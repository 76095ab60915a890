"""The call to Coral's ``edgetpu_compiler`` and the reading of its log.

Source: https://coral.ai/docs/edgetpu/compiler/ (system requirements, install commands, flags
``-s/--show_operations``, ``-o/--out_dir``, ``-m/--min_runtime_version``, compiler and runtime
versions). The compiler runs only on x86-64 Debian/Ubuntu; everywhere else the call reports why
it did not compile instead of raising.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgesight.edge.errors import BundleError

# Compiler version (major.minor) -> runtime version its models need by default; a model compiled
# for a newer runtime fails to load on an older one ("Package requires runtime version (14),
# which is newer than this runtime version (13)"). ``-m N`` compiles for an older runtime.
COMPILER_RUNTIME_VERSIONS: Dict[str, int] = {"16.0": 14, "15.0": 13, "14.1": 13}

INSTALL_COMMANDS = (
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && "
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | '
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list && "
    "sudo apt-get update && sudo apt-get install edgetpu-compiler"
)
NOT_FOUND_REASON = (
    "edgetpu_compiler not found: it runs only on x86-64 Linux (Debian/Ubuntu); install it with: "
    + INSTALL_COMMANDS
)

# The status column of the compiler's op table for an op that runs on the Edge TPU.
MAPPED_STATUS = "Mapped to Edge TPU"

_VERSION_RE = re.compile(r"Edge TPU Compiler version (\S+)")
_OP_LINE_RE = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_COUNT_RES = {
    "num_ops_edgetpu": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "num_ops_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "num_subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "total_ops": re.compile(r"Total number of operations:\s*(\d+)"),
}


def parse_compiler_log(text: str) -> Dict[str, Any]:
    """Read the compiler's version, op table and op counts from its output or ``.log`` file.

    The op table follows an ``Operator  Count  Status`` header, one line per op type and status,
    e.g. ``CONV_2D  11  Mapped to Edge TPU`` or ``HARD_SWISH  2  Operation not supported``.

    Args:
        text: stdout of ``edgetpu_compiler -s`` or the ``<stem>_edgetpu.log`` it writes.

    Returns:
        ``version`` (str or None), ``runtime_version`` (int or None, from the version table),
        ``ops`` (list of op, count, status, mapped) and whichever op counts the text states.
    """
    version = _VERSION_RE.search(text)
    ver = version.group(1) if version else None
    ops: List[Dict[str, Any]] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        m = _OP_LINE_RE.match(line.strip()) if in_table else None
        if m:
            status = m.group(3)
            ops.append({"op": m.group(1), "count": int(m.group(2)), "status": status, "mapped": status == MAPPED_STATUS})
    out: Dict[str, Any] = {
        "version": ver,
        "runtime_version": COMPILER_RUNTIME_VERSIONS.get(".".join(ver.split(".")[:2])) if ver else None,
        "ops": ops,
    }
    for key, rx in _COUNT_RES.items():
        m = rx.search(text)
        if m:
            out[key] = int(m.group(1))
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_edgetpu_compiler(
    tflite_path: Path,
    out_dir: Path,
    timeout: float = 300,
    min_runtime_version: Optional[int] = None,
) -> Dict[str, Any]:
    """Compile a model with ``edgetpu_compiler -s -o OUT_DIR MODEL`` when the compiler is installed.

    Args:
        tflite_path: the full-integer .tflite model.
        out_dir: where the compiler writes ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log``.
        timeout: seconds before the compiler is stopped.
        min_runtime_version: passed as ``-m`` to target an older Edge TPU runtime.

    Returns:
        ``compiled`` (bool), ``path`` (the compiled model, or None), ``reason`` (why not
        compiled, or None), ``log`` (the compiler's output, and its .log file when written),
        ``version`` and ``runtime_version`` of the compiler, ``ops`` (the per-op status table
        from the log) and the op counts the log states. A missing compiler, a non-zero exit or a
        timeout is reported in ``reason``, never raised.

    Raises:
        BundleError: ``tflite_path`` does not exist.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    if not tflite_path.is_file():
        raise BundleError(f"{tflite_path}: no such model file; convert the model first")
    result: Dict[str, Any] = {"compiled": False, "path": None, "reason": None, "log": "", "version": None,
                              "runtime_version": None, "ops": []}
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        result["reason"] = NOT_FOUND_REASON
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-s", "-o", str(out_dir)]
    if min_runtime_version is not None:
        cmd += ["-m", str(min_runtime_version)]
    cmd.append(str(tflite_path))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        partial = "".join(s.decode() if isinstance(s, bytes) else s for s in (e.stdout, e.stderr) if s)
        result.update(reason=f"edgetpu_compiler timed out after {timeout:g} s", log=partial)
        return result
    except OSError as e:
        result["reason"] = f"edgetpu_compiler could not be started: {e}"
        return result
    log = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
    parsed = parse_compiler_log(log)
    log_file = out_dir / f"{tflite_path.stem}_edgetpu.log"
    if log_file.is_file():
        file_text = log_file.read_text(errors="replace")
        log += "\n" + file_text
        result["log_file"] = str(log_file)
        # -s prints the op table on stdout too; the .log file is the fallback when it did not.
        if not parsed["ops"]:
            parsed["ops"] = parse_compiler_log(file_text)["ops"]
    result.update(parsed, log=log)
    if proc.returncode != 0:
        result["reason"] = _last_line(proc.stdout + "\n" + proc.stderr)
        return result
    compiled = out_dir / f"{tflite_path.stem}_edgetpu.tflite"
    if not compiled.is_file():
        result["reason"] = f"edgetpu_compiler exited 0 but wrote no {compiled.name}"
        return result
    result.update(compiled=True, path=str(compiled))
    return result
