"""``train --task anomaly --method autoencoder`` on a tiny QC-parts dataset (32x32, two epochs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgesight.edge.errors import ConfigError

pytestmark = pytest.mark.slow

SIZE = 32
FALSE_REJECT = 0.1
DEFECT_KINDS = ("crack", "misprint", "missing_hole", "scratch", "stain")


@pytest.fixture(scope="module")
def ae(tmp_path_factory):
    from edgesight.cli import main
    from edgesight.training.synth import write_qc_parts

    root = tmp_path_factory.mktemp("autoencoder")
    data = root / "data"
    write_qc_parts(data, kind="pcb", good=30, defects_per_kind=2, size=64, seed=3)
    run = root / "run"
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in ["train", data / "train", "--task", "anomaly", "--method", "autoencoder", "--img-size", SIZE,
                               "--epochs", 2, "--batch-size", 8, "--defects", data / "val", "--false-reject", FALSE_REJECT,
                               "--out", run]])
    assert e.value.code == 0
    return SimpleNamespace(data=data, run=run)


def _pixels(run: Path, paths):
    """The images as the run's model takes them (its model.json's preprocessing)."""
    from edgesight.edge.model.spec import PreprocessSpec
    from edgesight.training.pipeline import load_batch

    spec = PreprocessSpec.from_dict(json.loads((run / "model.json").read_text())["preprocess"])
    return load_batch([str(p) for p in paths], spec)


def _model(run: Path):
    from edgesight.training.evaluate import load_keras_model

    return load_keras_model(run / "model.keras")


def test_run_folder(ae):
    run = ae.run
    assert {"model.keras", "model.json", "split.json", "metrics.json", "config.yaml", "history.json", "scores.png", "roc.png"} <= {p.name for p in run.iterdir()}
    assert not run.with_name(run.name + ".partial").exists()
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "anomaly" and info["labels"] == ["ok", "defect"] and info["backbone"] == "autoencoder"
    pre = info["preprocess"]
    assert (pre["height"], pre["width"], pre["channels"]) == (SIZE, SIZE, 3)
    assert pre["model_mean"] == [0.0] and pre["model_std"] == [255.0]
    sec = info["anomaly"]
    assert (sec["method"], sec["grid"], sec["features"], sec["false_reject"]) == ("autoencoder", [4, 4], 0, FALSE_REJECT)
    assert sec["files"] == {} and sec["threshold"] > 0
    assert not (run / "anomaly").exists()

    split = json.loads((run / "split.json").read_text())
    fit, hold = set(split["fit"]), set(split["holdout"])
    assert not fit & hold and (len(fit), len(hold)) == (20, 10)
    assert sorted(fit | hold) == sorted(str(p.resolve()) for p in (ae.data / "train" / "good").iterdir())

    m = json.loads((run / "metrics.json").read_text())
    assert {"auroc", "at_threshold", "per_kind", "best_f1", "good_scores", "defect_scores", "threshold_raw",
            "false_reject_target", "fit_images", "grid", "seconds"} <= set(m)
    assert m["method"] == "autoencoder" and m["grid"] == [4, 4] and m["fit_images"] == 20
    assert 0.0 <= m["auroc"] <= 1.0 and sorted(m["per_kind"]) == sorted(DEFECT_KINDS)
    assert m["threshold_raw"] == pytest.approx(sec["threshold"])
    assert {"train", "fit", "total"} <= set(m["seconds"])
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_loss"]) == 2  # 4 of the 20 fit images watch the loss


def test_reconstruction_has_the_input_shape(ae):
    model = _model(ae.run)
    assert tuple(model.inputs[0].shape[1:]) == tuple(model.outputs[0].shape[1:]) == (SIZE, SIZE, 3)
    pixels = _pixels(ae.run, sorted((ae.data / "val" / "good").iterdir())[:3])
    rec = np.asarray(model(pixels.astype(np.float32), training=False))
    assert rec.shape == pixels.shape and rec.min() >= 0.0 and rec.max() <= 1.0


def test_threshold_flags_at_most_the_false_reject_share(ae):
    from edgesight.edge.model.anomaly import ReconstructionScorer

    hold = sorted(json.loads((ae.run / "split.json").read_text())["holdout"])
    threshold = json.loads((ae.run / "model.json").read_text())["anomaly"]["threshold"]
    pixels = _pixels(ae.run, hold)
    rec = np.asarray(_model(ae.run)(pixels.astype(np.float32), training=False))
    scores = np.sort(ReconstructionScorer((4, 4)).patch_scores(rec, pixels).reshape(len(hold), -1).max(1))[::-1]
    allowed = math.floor(FALSE_REJECT * len(scores))
    assert int((scores >= threshold).sum()) <= allowed
    assert scores[allowed] < threshold < scores[allowed] * 1.001


@pytest.mark.parametrize("size", [40, 16])
def test_input_size_not_a_multiple_of_16(tmp_path, size):
    from edgesight.training.autoencoder import train_autoencoder
    from edgesight.training.config import TrainConfig

    cfg = TrainConfig(data=str(tmp_path), task="anomaly", anomaly_method="autoencoder", img_size=size, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="--img-size"):
        train_autoencoder(cfg, progress=False)
    assert not (tmp_path / "run").exists()
