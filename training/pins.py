"""A dataset's own ``split.json``: the split of the images it lists, kept when images are added.

A folder of class sub-folders is split at random per class, so adding images to a class would
reshuffle it and move old images into (or out of) the test split, and the test figures of two
runs would no longer compare. ``edgesight datasets merge`` therefore writes ``DATA/split.json``
(the format of a run's ``split.json``) listing every image it knows with its split: the old
images as an earlier run split them, the added ones as ``train`` or ``val``. ``edgesight train
DATA`` keeps the split of every image listed there and splits only the images it does not list.
Delete the file to split the whole dataset afresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from edgesight.edge.errors import DatasetError

PIN_FILE = "split.json"
PIN_FORMAT = "edgesight.split/1"
PIN_SPLITS = ("train", "val", "test")


def read_pins(root: Path) -> Dict[str, str]:
    """Resolved image path -> ``train``/``val``/``test`` from ``root/split.json``; ``{}`` when
    there is none. Relative paths are relative to ``root``.

    Raises:
        DatasetError: the file is not an edgesight split file (one line naming it and the fix).
    """
    path = Path(root) / PIN_FILE
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or d.get("format") != PIN_FORMAT:
            raise ValueError(f"format is not {PIN_FORMAT}")
        pins: Dict[str, str] = {}
        for name in PIN_SPLITS:
            for entry in d.get(name, []):
                rel = Path(str(entry[0]))
                pins[str((rel if rel.is_absolute() else Path(root) / rel).resolve())] = name
        return pins
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise DatasetError(f"{path}: not an edgesight split file ({e}); fix it, or delete it to split the dataset afresh") from e
