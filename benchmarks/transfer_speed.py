"""Phase 1 of transfer learning on cached backbone features vs the backbone run every epoch.

    python -m benchmarks.transfer_speed                 # 224x224, 100 Fashion-MNIST images per class
    python -m benchmarks.transfer_speed --per-class 50 --img-size 96

Both runs are ``edgesight train`` with the same data, seed, backbone (EfficientNet-Lite0 with
ImageNet weights), epochs and augmentation, phase 1 only (``--fine-tune-epochs 0``): one with
the default ``--feature-copies 4`` (features of each image and three augmented copies computed
once, the head trained on them), one with ``--feature-copies 0`` (the frozen backbone runs on
freshly augmented images every epoch). The result is the ratio of their wall times, measured
side by side in one run, and the accuracy each reaches on the run's test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict

from benchmarks.common import ROOT, machine, run_edgesight, save_result
from benchmarks.prepare_data import export_fashion

WORK = ROOT / "work" / "transfer_speed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100, help="Fashion-MNIST training images per class")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=20, help="phase 1 epochs (early stopping may end sooner)")
    a = ap.parse_args()
    data = WORK / f"fashion{a.per_class}"
    if not data.exists():
        export_fashion(data, per_class=a.per_class)
    common = ["--model", "efficientnet_lite0", "--img-size", str(a.img_size), "--color", "grayscale", "--epochs", str(a.epochs),
              "--fine-tune-epochs", "0", "--seed", "0", "--overwrite", "--no-probe"]
    rows: Dict[str, Any] = {}
    for name, copies in (("cached_features", "4"), ("backbone_every_epoch", "0")):
        run = WORK / name
        log = WORK / f"{name}.log"
        log.unlink(missing_ok=True)
        seconds = run_edgesight(["train", str(data / "train"), "--out", str(run), "--feature-copies", copies, *common], log)
        metrics = json.loads((run / "metrics.json").read_text())
        rows[name] = {"feature_copies": int(copies), "wall_s": round(seconds, 1), "train_seconds": metrics.get("seconds"),
                      "epochs_run": metrics.get("epochs_run"), "test_accuracy": metrics.get("accuracy"), "test_images": metrics.get("num_samples")}
        print(json.dumps({name: rows[name]}), flush=True)
    speedup = rows["backbone_every_epoch"]["wall_s"] / rows["cached_features"]["wall_s"]
    result = {"machine": machine(), "data": f"Fashion-MNIST, {a.per_class} training images per class", "img_size": a.img_size,
              "epochs": a.epochs, "runs": rows, "speedup": round(speedup, 2),
              "accuracy_difference_pp": round(100 * (rows["cached_features"]["test_accuracy"] - rows["backbone_every_epoch"]["test_accuracy"]), 2)}
    save_result("transfer_speed", result)
    print(f"phase 1 on cached features: {speedup:.2f}x faster end to end "
          f"({rows['cached_features']['wall_s']:.0f} s vs {rows['backbone_every_epoch']['wall_s']:.0f} s); test accuracy "
          f"{100 * rows['cached_features']['test_accuracy']:.2f} % vs {100 * rows['backbone_every_epoch']['test_accuracy']:.2f} %")


if __name__ == "__main__":
    main()
