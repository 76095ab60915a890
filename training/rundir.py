"""The run folder of a training: refusing to overwrite, staging it, and what a training returns."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgesight.edge.errors import ConfigError


@dataclass
class TrainResult:
    run_dir: Path
    metrics: Dict[str, Any]
    history: Dict[str, List[float]]
    interrupted: bool
    seconds: float



def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing run folder unless asked to."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out}: already exists; choose another --out or pass --overwrite")


OWNER_FILE = ".owner"


def _staging_owner(staging: Path) -> Optional[int]:
    """The live process (not this one) assembling ``staging``, or None when there is none."""
    try:
        pid = int((staging / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    """Check ``out`` and create the staging folder ``<out>.partial``.

    A staging folder left by a run that died is removed; one that a live training is still
    writing is an error (two trainings into one ``--out`` would mix their files).
    """
    check_out(out, overwrite)
    staging = out.with_name(out.name + ".partial")
    owner = _staging_owner(staging)
    if owner is not None:
        raise ConfigError(f"{out}: another training (process {owner}) is writing this run folder; wait for it to finish or choose another --out")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / OWNER_FILE).write_text(str(os.getpid()))
    return staging
