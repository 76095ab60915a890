"""Shared fixtures: small generated datasets and one trained run reused across tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never reach a package index: `edgesight bundle` makes slim archives unless a test asks for
# a wheelhouse (built from the wheel cache that scripts/test.sh fills), and pip sees local folders only.
os.environ.setdefault("EDGESIGHT_WHEELHOUSE", "0")
os.environ["PIP_NO_INDEX"] = "1"

def run_cli(args, capsys):
    """Run ``edgesight ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from edgesight.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


COLORS_BGR: Dict[str, tuple] = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 30)}


def write_color_dataset(root: Path, per_class: int = 16, size: int = 24, seed: int = 0, classes=COLORS_BGR) -> Path:
    """Class folders of noisy, solid-colour images: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    for name, bgr in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.empty((size, size, 3), np.float32)
            img[:] = bgr
            img += rng.normal(0, 20, img.shape)
            x0, y0 = rng.integers(0, size // 2, 2)
            img[y0 : y0 + size // 3, x0 : x0 + size // 3] *= rng.uniform(0.5, 1.0)
            cv2.imwrite(str(folder / f"{name}_{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return root


def add_bad_files(folder: Path) -> Dict[str, str]:
    """Drop unusable files into ``folder``; returns file name -> expected reason fragment."""
    good = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))[1].tobytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "notes.jpg").write_text("this is not an image")
    (folder / "readme.txt").write_text("class notes")
    return {
        "empty.png": "empty file",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "notes.jpg": "not an image",
        "readme.txt": "not an image file",
    }


@pytest.fixture(scope="session")
def color_data(tmp_path_factory) -> Path:
    return write_color_dataset(tmp_path_factory.mktemp("colors") / "data", per_class=20)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, color_data) -> Path:
    """A cnn_small run on the colour dataset (a few seconds), shared by evaluation tests."""
    from edgesight.training.config import TrainConfig
    from edgesight.training.train import train

    out = tmp_path_factory.mktemp("runs") / "colors"
    cfg = TrainConfig(
        data=str(color_data), out=str(out), model="cnn_small", img_size=16, epochs=6, batch_size=8,
        learning_rate=5e-3, augment="light", early_stopping=0, alpha=0.5, seed=1,
    )
    train(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def color_bundle(tmp_path_factory, trained_run) -> Path:
    """The int8 (uint8 I/O) bundle of ``trained_run``, for the runtime tests."""
    from edgesight.convert.config import ConvertConfig
    from edgesight.convert.convert import convert_source

    out = tmp_path_factory.mktemp("bundles") / "colors-int8"
    convert_source(trained_run, out, ConvertConfig.int8(), progress=False)
    return out
