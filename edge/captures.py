"""The capture folder's layout, shared by ``run --capture``, ``datasets merge`` and the relabel page.

A capture folder is a class-folder dataset (see :mod:`edgesight.edge.sinks.capture` for what the
run writes into it)::

    DIR/<label>/<name>.jpg       frames in the folder of their label
    DIR/_uncertain/<name>.jpg    frames the model was unsure of, until someone relabels them
    DIR/captures.jsonl           one JSON object per line: captures, then relabellings

Folder names come from the model's labels, which come from a bundle: a file from elsewhere, so
a label is never used as a path as it is. :func:`folder_name` turns it into one plain folder
name (no separators, no ``..``, nothing hidden, nothing a FAT-formatted SD card refuses).
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Union

UNCERTAIN_DIR = "_uncertain"
LOG_FILE = "captures.jsonl"
CAPTURE_SUFFIX = ".jpg"
REASONS = ("uncertain", "label", "random")
# Path separators and the characters FAT/exFAT (most SD cards and USB sticks) refuse in names.
_UNSAFE = re.compile(r'[/\\:*?"<>|]')
MAX_NAME_BYTES = 120


def folder_name(label: str) -> str:
    """The folder of ``label`` in a capture folder: the label itself when it is a plain folder
    name, else the label with separators, control characters and characters that FAT refuses
    replaced by ``_``, surrounding spaces and leading dots removed, and cut to 120 bytes.

    Never empty, never ``.``/``..``, never hidden and never ``_uncertain`` (that one gets a
    trailing ``_``).
    """
    text = unicodedata.normalize("NFC", str(label))
    text = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)
    name = _UNSAFE.sub("_", text).strip().lstrip(".").strip()
    while len(name.encode("utf-8")) > MAX_NAME_BYTES:
        name = name[:-1]
    name = name.rstrip(". ") or "_"
    if name == UNCERTAIN_DIR:
        name += "_"
    return name


def folder_names(labels: Iterable[str]) -> Dict[str, str]:
    """``label -> folder`` for the labels of one model, two labels never sharing a folder (a
    second ``a/b`` beside ``a_b`` becomes ``a_b-2``)."""
    out: Dict[str, str] = {}
    used = set()
    for label in labels:
        base = name = folder_name(label)
        n = 2
        while name in used:
            name = f"{base}-{n}"
            n += 1
        used.add(name)
        out[label] = name
    return out


def read_records(folder: Union[str, Path]) -> List[Dict[str, Any]]:
    """The JSON objects of ``folder/captures.jsonl`` in order; lines that are not JSON objects
    (a line cut short by a power cut) are left out. An absent file gives ``[]``."""
    return list(_records(Path(folder) / LOG_FILE))


def _records(path: Path) -> Iterator[Dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj
