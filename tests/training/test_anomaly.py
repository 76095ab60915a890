"""``train --task anomaly``, its conversion, and the bundle in ``run``, ``evaluate`` and the API.

One tiny QC-parts dataset at 64x64 (a 4x4 grid of patch features), trained and converted once
for the module.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

DEFECT_KINDS = ("crack", "misprint", "missing_hole", "scratch", "stain")
FALSE_REJECT = 0.1
PER_KIND = 4  # test images per defect kind


def _cli_ok(args):
    from edgesight.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code == 0, args


@pytest.fixture(scope="module")
def qc(tmp_path_factory):
    from edgesight.training.synth import write_qc_parts

    root = tmp_path_factory.mktemp("anomaly")
    data = root / "data"
    counts = write_qc_parts(data, kind="pcb", good=40, defects_per_kind=PER_KIND, size=64, seed=1)
    assert counts["train/good"] == 40 and counts["test/good"] == 10 and counts["test/stain"] == PER_KIND
    run, bundle = root / "run", root / "bundle"
    _cli_ok(["train", data / "train", "--task", "anomaly", "--img-size", 64, "--defects", data / "val",
             "--false-reject", FALSE_REJECT, "--out", run])
    # ten defects at 64x64 make the AUROC a coarse figure: the drop is not what these tests measure
    _cli_ok(["convert", run, "--out", bundle, "--max-drop", 100])
    return SimpleNamespace(root=root, data=data, run=run, bundle=bundle)


def _rgb(paths):
    return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])


def _aligned(sec) -> bool:
    return sec.get("align", "none") != "none"


def _state_files(sec):
    """The arrays model.json's anomaly entry must list: PaDiM's two, and the alignment reference
    when it says the images are aligned."""
    return ["inv_cov", "mean"] + (["reference"] if _aligned(sec) else [])


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_folder(qc):
    run = qc.run
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "anomaly" and info["labels"] == ["ok", "defect"]
    assert (run / "labels.txt").read_text() == "ok\ndefect\n"
    sec = info["anomaly"]
    assert (sec["method"], sec["grid"], sec["features"], sec["false_reject"]) == ("padim", [4, 4], 152, FALSE_REJECT)
    assert sorted(sec["files"]) == _state_files(sec)
    assert (run / "model.keras").is_file()
    assert np.load(run / "anomaly" / "mean.npy").shape == (16, 152)
    assert np.load(run / "anomaly" / "inv_cov.npy").shape == (16, 152, 152)
    for entry in sec["files"].values():
        assert hashlib.sha256((run / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]

    split = json.loads((run / "split.json").read_text())
    train_images = sorted(str(p.resolve()) for p in (qc.data / "train" / "good").iterdir())
    fit, hold = set(split["fit"]), set(split["holdout"])
    assert not fit & hold
    assert sorted(str(Path(p).resolve()) for p in fit | hold) == train_images
    assert (len(fit), len(hold)) == (30, 10)
    kinds = [d["kind"] for d in split["defects"]]
    assert sorted(set(kinds)) == sorted({"good", *DEFECT_KINDS})
    assert kinds.count("good") == 10 and all(kinds.count(k) == 2 for k in DEFECT_KINDS)

    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["auroc"] <= 1.0
    at = metrics["at_threshold"]
    # the threshold's own held-out images and the val/good ones, and 10 defects
    assert (metrics["good"], metrics["defects"]) == (20, 10)
    assert at["tp"] + at["fn"] == 10 and at["fp"] + at["tn"] == 20
    assert sorted(metrics["per_kind"]) == sorted(DEFECT_KINDS)
    assert _png(run / "scores.png") and _png(run / "roc.png")


def test_threshold_flags_at_most_the_false_reject_share(qc):
    from edgesight.edge.model.anomaly import PadimScorer
    from edgesight.training.evaluate import load_keras_model

    split = json.loads((qc.run / "split.json").read_text())
    sec = json.loads((qc.run / "model.json").read_text())["anomaly"]
    threshold = sec["threshold"]
    images = _rgb(sorted(split["holdout"]))
    if _aligned(sec):
        from edgesight.edge.model.align import Aligner

        align = Aligner(np.load(qc.run / sec["files"]["reference"]["file"]))
        images = np.stack([align(im) for im in images])
    model = load_keras_model(qc.run / "model.keras")
    feats = np.asarray(model(images.astype(np.float32), training=False))
    assert feats.shape == (10, 4, 4, 152)
    scorer = PadimScorer(np.load(qc.run / "anomaly" / "mean.npy"), np.load(qc.run / "anomaly" / "inv_cov.npy"))
    scores = np.sort(scorer.patch_scores(feats).reshape(10, -1).max(1))[::-1]
    allowed = math.floor(FALSE_REJECT * len(scores))
    assert int((scores >= threshold).sum()) <= allowed
    # and no stricter than that: the next score down would flag more than the share
    assert scores[allowed] < threshold < scores[allowed] * 1.001


def test_bundle(qc):
    from ai_edge_litert.interpreter import Interpreter

    b = qc.bundle
    info = json.loads((b / "model.json").read_text())
    assert info["task"] == "anomaly" and info["labels"] == ["ok", "defect"]
    assert info["sha256"] == hashlib.sha256((b / "model.tflite").read_bytes()).hexdigest()
    interp = Interpreter(model_path=str(b / "model.tflite"))
    out = interp.get_output_details()
    assert len(out) == 1
    assert tuple(out[0]["shape"]) == (1, 4, 4, 152)
    assert out[0]["dtype"] == np.uint8  # int8 model, uint8 camera-pixel I/O (--io default)
    scale, zero = out[0]["quantization"]
    assert scale > 0 and info["quantization"]["output"]["scale"] == pytest.approx(scale)
    assert interp.get_input_details()[0]["dtype"] == np.uint8
    sec = info["anomaly"]
    assert (sec["method"], sec["grid"], sec["features"]) == ("padim", [4, 4], 152)
    assert sorted(sec["files"]) == _state_files(sec)
    for role, entry in sec["files"].items():
        assert entry["file"] == f"anomaly/{role}.npy"
        assert hashlib.sha256((b / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    # the int8 scorer is fitted again, on the int8 features: not the run's arrays
    assert not np.array_equal(np.load(b / "anomaly" / "mean.npy"), np.load(qc.run / "anomaly" / "mean.npy"))
    report = json.loads((b / "conversion_report.json").read_text())
    assert report["task"] == "anomaly" and report["method"] == "padim"
    assert 0.0 <= report["float_auroc"] <= 1.0 and 0.0 <= report["quant_auroc"] <= 1.0
    assert report["auroc_drop_pp"] == pytest.approx((report["float_auroc"] - report["quant_auroc"]) * 100)
    assert report["max_drop_pp"] == 100 and report["passed"] is True
    assert (report["fit_images"], report["holdout_images"], report["defect_images"]) == (30, 10, 10)
    assert report["threshold_int8"] == pytest.approx(sec["threshold"])


def test_classifier_held_out_good_and_a_stain(qc):
    import edgesight

    hold = sorted(json.loads((qc.run / "split.json").read_text())["holdout"])
    with edgesight.Classifier(qc.bundle) as clf:
        assert clf.is_anomaly
        preds = [clf(p) for p in hold]
        assert {p.label for p in preds} <= {"ok", "defect"}
        assert all(p.score > 0 for p in preds)
        # the int8 threshold was set on these images for the false-reject share
        flagged = sum(p.label == "defect" for p in preds)
        assert flagged <= math.floor(FALSE_REJECT * len(hold))
        assert sorted(p.score >= 1.0 for p in preds) == sorted(p.label == "defect" for p in preds)
        good = min(preds, key=lambda p: p.score)
        assert good.label == "ok" and good.score < 1.0

        img = cv2.imread(good.path)
        stained = img.copy()
        cv2.ellipse(stained, (34, 30), (16, 11), 20, 0, 360, (20, 60, 110), -1)
        cv2.circle(stained, (24, 40), 7, (10, 10, 10), -1)
        bad = clf(stained)
        assert bad.label == "defect" and bad.score >= 1.0 and bad.path is None
        assert bad.score > 1.5 * good.score
        heat = clf.model.last_map
        assert heat.shape == (4, 4) and heat.max() == pytest.approx(bad.score, rel=1e-5)
        # the same image as a frame and as a file scores the same
        assert clf(img).score == pytest.approx(good.score, rel=1e-6)
        # the HTTP classify page's own interpreter decides ok/defect the same way
        from edgesight.edge.web.classify import bytes_classifier

        web = bytes_classifier(clf, own_interpreter=True)
        assert web(cv2.imencode(".png", stained)[1].tobytes())["label"] == "defect"
        assert web(cv2.imencode(".png", img)[1].tobytes())["label"] == "ok"


def _frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok
        return frame
    finally:
        cap.release()


def test_run_jsonl_and_heatmap_video(qc, tmp_path, capsys):
    test = qc.data / "test"
    code, out, err = run_cli(["run", qc.bundle, "--source", test, "--jsonl", tmp_path / "a.jsonl", "--max-frames", 6,
                              "--save", tmp_path / "plain.mp4"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(events) == 6
    assert [e["frame"] for e in events] == list(range(6))
    assert {e["label"] for e in events} <= {"ok", "defect"}
    assert all((e["label"] == "defect") == (e["score"] >= 1.0) for e in events)
    assert all(e["score"] > 0 for e in events)

    code, out, err = run_cli(["run", qc.bundle, "--source", test, "--jsonl", tmp_path / "b.jsonl", "--max-frames", 6,
                              "--heatmap", "--save", tmp_path / "heat.mp4"], capsys)
    assert code == 0, err
    assert [e["score"] for e in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())] == [e["score"] for e in events]
    plain, heat = _frame(tmp_path / "plain.mp4", 2), _frame(tmp_path / "heat.mp4", 2)
    assert plain.shape == heat.shape
    # the heatmap tints the whole region the model saw (alpha 0.45), far beyond codec noise
    assert np.abs(plain.astype(np.float32) - heat.astype(np.float32)).mean() > 15


def test_evaluate_bundle(qc, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", qc.bundle, qc.data / "test", "--json", tmp_path / "r.json",
                              "--plot", tmp_path / "roc.png"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert (r["task"], r["images"], r["good"], r["defects"]) == ("anomaly", 10 + 5 * PER_KIND, 10, 5 * PER_KIND)
    assert sorted(r["per_kind"]) == sorted(DEFECT_KINDS)
    assert all(r["per_kind"][k]["images"] == PER_KIND for k in DEFECT_KINDS)
    assert all(0 <= r["per_kind"][k]["caught"] <= PER_KIND for k in DEFECT_KINDS)
    assert 0.0 <= r["auroc"] <= 1.0
    assert f"{10 + 5 * PER_KIND} images: 10 good, {5 * PER_KIND} defects" in out
    assert _png(tmp_path / "roc.png")


def test_evaluate_needs_good(qc, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(qc.data / "test" / "stain", data / "stain")
    code, out, err = run_cli(["evaluate", qc.bundle, data], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {data}: no good/ sub-folder with images")


def test_train_refuses_too_few_images(qc, tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted((qc.data / "train" / "good").iterdir())[:11]:
        shutil.copy(p, few / p.name)
    code, _, err = run_cli(["train", few, "--task", "anomaly", "--img-size", 64, "--out", tmp_path / "r"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.strip() == ("error: 11 good image(s): anomaly detection needs at least 12 (10 held out to set the threshold); "
                           "add good images")
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_size_off_the_grid(qc, tmp_path, capsys):
    code, _, err = run_cli(["train", qc.data / "train", "--task", "anomaly", "--img-size", 100, "--out", tmp_path / "r"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --task anomaly needs an input size that is a multiple of 16 and at least 32, got 100x100")
    assert not (tmp_path / "r").exists()


def test_train_refuses_defects_that_are_not_a_folder(qc, tmp_path, capsys):
    (tmp_path / "defects.txt").write_text("not a folder")
    for defects in (tmp_path / "defects.txt", tmp_path / "missing"):
        code, _, err = run_cli(["train", qc.data / "train", "--task", "anomaly", "--img-size", 64, "--defects", defects,
                                "--out", tmp_path / "r"], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert err.startswith(f"error: --defects {defects}: not a folder")
    assert not (tmp_path / "r").exists()


def test_run_refuses_a_modified_scorer_file(qc, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(qc.bundle, bundle)
    mean = np.load(bundle / "anomaly" / "mean.npy")
    mean[3] += 0.5
    np.save(bundle / "anomaly" / "mean.npy", mean)
    args = ["run", bundle, "--source", qc.data / "test" / "good", "--jsonl", tmp_path / "e.jsonl", "--max-frames", 2]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {bundle / 'anomaly' / 'mean.npy'}: sha256 does not match anomaly.files.mean.sha256")
    assert not (tmp_path / "e.jsonl").exists()  # refused before any frame
    # the way out the message names
    code, _, err = run_cli(args + ["--no-verify"], capsys)
    assert code == 0, err
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 2


def test_benchmark_measures_an_anomaly_bundle_with_its_scoring(qc, tmp_path, capsys):
    code, out, err = run_cli(["benchmark", qc.bundle, "--threads", "1", "--runs", "5", "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "b.json").read_text())
    (row,) = r["results"]
    assert row["threads"] == 1 and row["end_to_end_ms"]["p50"] >= row["invoke_ms"]["p50"] > 0
