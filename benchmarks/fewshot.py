"""Few-shot enrolment: classes added on the device from 1, 5 or 10 photos, without training.

    python -m benchmarks.fewshot                    # both datasets (about 25 min on 2 busy cores)
    python -m benchmarks.fewshot --only signs

For each dataset, ``edgesight train`` learns all classes but a few held out (chosen with a
seeded draw), ``edgesight convert --quant int8`` makes the bundle (with its embedding output;
``--eval`` points at a separate "support" set of the trained classes, which becomes the
bundle's reference embeddings), then each held-out class is enrolled from ``n`` support images
of it (``n`` = 1, 5, 10; 5 random draws each) and the bundle classifies a test set of every
class. Reported: accuracy on the enrolled classes' test images, and on the trained classes'
test images before and after enrolment (the change in points).

* ``signs``: the traffic-sign renderer (``training/synth/signs.py``), 10 classes, 3 held out;
  cnn_small at 48x48 RGB, trained without horizontal flips (turn_left mirrors turn_right).
* ``fashion``: Fashion-MNIST (Debian ``dataset-fashion-mnist``), 10 classes, 2 held out;
  cnn_small at 32x32 grayscale on 1,000 training images per trained class, tested on the
  official test images (300 per class); the support images are official training images the
  model never saw.

The held-out classes' scores are computed with the runtime's own code
(:class:`~edgesight.edge.model.enroll.EnrolledSet` on the int8 embeddings) once per draw from
one pass of the interpreter over the test images; one draw per dataset goes through
``Classifier.enroll`` and ``Classifier.__call__`` on the files and must give the same labels.
Work goes to ``benchmarks/work/fewshot/``; finished training and conversion are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from benchmarks.common import ROOT, machine, run_edgesight, save_result, update_readme_table

WORK = ROOT / "work" / "fewshot"
SHOTS = (1, 5, 10)
DRAWS = 5
SUPPORT = 30  # support images per class: reference (trained) or shot pool (held out)
GOALS = {"signs": 0.90, "fashion": 0.75}
MAX_TRAINED_LOSS_PP = 1.0

# EfficientNet-Lite0 with its ImageNet weights kept (no fine-tuning): the head is trained on the
# pooled features, so the embedding stays the generic one the backbone learnt on ImageNet.
EFFL0 = ["--model", "efficientnet_lite0", "--img-size", "96", "--fine-tune-epochs", "0"]
DATASETS: Dict[str, Dict[str, Any]] = {
    "signs": {"held_out": 3, "size": 96, "train_per_class": 100, "test_per_class": 100, "model": "efficientnet_lite0",
              "train": [*EFFL0, "--no-hflip"]},
    "fashion": {"held_out": 2, "size": 28, "train_per_class": 300, "test_per_class": 300, "model": "efficientnet_lite0",
                "train": [*EFFL0, "--color", "grayscale"]},
}
# What was tried first and missed the trained-classes goal by far: a from-scratch cnn_small's
# features separate only the classes it was trained on, so a held-out sign lands on a trained
# look-alike (no_entry on a red circle, turn_left on turn_right) and takes its images.
EARLIER = {
    "signs": {"model": "cnn_small", "img_size": 48, "train": ["--img-size", "48", "--epochs", "25", "--no-hflip", "--early-stopping", "6"],
              "train_per_class": 200, "trained_accuracy_before": 0.9971,
              "rows": [{"shots": 1, "enrolled_accuracy_mean": 0.795, "trained_change_pp_mean": -29.46},
                       {"shots": 5, "enrolled_accuracy_mean": 0.950, "trained_change_pp_mean": -40.86},
                       {"shots": 10, "enrolled_accuracy_mean": 0.948, "trained_change_pp_mean": -40.57}],
              "note": "held out no_entry, priority_road, turn_left; 5-shot prototypes of no_entry and turn_left have cosine 0.93 "
                      "and 0.87 with images of a trained class, so no threshold keeps both goals"},
}


def _held_out(classes: Sequence[str], k: int) -> List[str]:
    return sorted(np.random.default_rng(0).choice(list(classes), k, replace=False).tolist())


def _prepare_signs(root: Path, cfg: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    from edgesight.training.synth import SIGN_CLASSES
    from edgesight.training.synth.signs import write_signs

    held = _held_out(SIGN_CLASSES, cfg["held_out"])
    trained = [c for c in SIGN_CLASSES if c not in held]
    if not (root / "done").exists():
        shutil.rmtree(root / "data", ignore_errors=True)
        write_signs(root / "data" / "train", per_class=cfg["train_per_class"], size=cfg["size"], seed=0, classes=trained)
        pool = root / "data" / "pool"
        write_signs(pool, per_class=SUPPORT + cfg["test_per_class"], size=cfg["size"], seed=1)
        for c in SIGN_CLASSES:
            for i, p in enumerate(sorted((pool / c).glob("*.png"))):
                dest = root / "data" / ("support" if i < SUPPORT else "test") / c
                dest.mkdir(parents=True, exist_ok=True)
                p.rename(dest / p.name)
        shutil.rmtree(pool)
        (root / "done").write_text("")
    return trained, held


def _prepare_fashion(root: Path, cfg: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    from benchmarks.prepare_data import FASHION_CLASSES, FASHION_DIR, _find, _idx

    held = _held_out(FASHION_CLASSES, cfg["held_out"])
    trained = [c for c in FASHION_CLASSES if c not in held]
    if not (root / "done").exists():
        shutil.rmtree(root / "data", ignore_errors=True)
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = _idx(_find(f"{prefix}-images", FASHION_DIR)), _idx(_find(f"{prefix}-labels", FASHION_DIR))
            seen: Dict[int, int] = {}
            for i, (img, y) in enumerate(zip(images, labels)):
                c, n = FASHION_CLASSES[int(y)], seen.get(int(y), 0)
                seen[int(y)] = n + 1
                if split == "train":
                    # the first images of a trained class train; the next SUPPORT are never seen
                    if c in trained and n < cfg["train_per_class"]:
                        part = "train"
                    elif cfg["train_per_class"] <= n < cfg["train_per_class"] + SUPPORT:
                        part = "support"
                    else:
                        continue
                elif n < cfg["test_per_class"]:
                    part = "test"
                else:
                    continue
                folder = root / "data" / part / c
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{split}_{i:05d}.png"), img)
        (root / "done").write_text("")
    return trained, held


def _train_and_convert(name: str, root: Path, cfg: Dict[str, Any], trained: Sequence[str]) -> Dict[str, Any]:
    run, bundle, log = root / "run", root / "int8", root / "log.txt"
    timing: Dict[str, Any] = {}
    if not (run / "metrics.json").exists():
        print(f"[{name}] training {cfg['model']} on {len(trained)} classes ...", flush=True)
        timing["train_s"] = round(run_edgesight(["train", str(root / "data" / "train"), "--out", str(run), "--overwrite",
                                                 "--seed", "0", *cfg["train"]], log), 1)
    if not (bundle / "conversion_report.json").exists():
        print(f"[{name}] converting to int8 with the embedding output ...", flush=True)
        support = root / "data" / "support_trained"
        if not support.exists():
            for c in trained:
                shutil.copytree(root / "data" / "support" / c, support / c)
        timing["convert_s"] = round(run_edgesight(["convert", str(run), "--quant", "int8", "--out", str(bundle), "--eval", str(support)], log), 1)
    return timing


def _files(folder: Path, classes: Sequence[str]) -> Tuple[List[Path], np.ndarray]:
    paths, labels = [], []
    for i, c in enumerate(classes):
        found = sorted((folder / c).glob("*.png"))
        paths += found
        labels += [i] * len(found)
    return paths, np.array(labels)


def _outputs(clf, paths: Sequence[Path]) -> Tuple[np.ndarray, np.ndarray]:
    """Trained-class probabilities and embeddings of image files, one invoke each."""
    probs, emb = [], []
    model = clf.model
    for p in paths:
        model.set_pixels(clf._pixels(p))
        model.invoke()
        out = model.raw_output()
        t = model.output_tensor
        probs.append((out.astype(np.float32) - t.zero_point) * t.scale if t.quantized else out.astype(np.float32))
        emb.append(model.output_embedding())
    return np.stack(probs), np.stack(emb)


def evaluate(name: str, root: Path, trained: Sequence[str], held: Sequence[str]) -> Dict[str, Any]:
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.model.enroll import EnrolledSet, enrol

    bundle = root / "int8"
    clf = Classifier(bundle, threads=2)
    if set(clf.info.labels) != set(trained):
        raise SystemExit(f"{bundle}: its classes are not the trained ones; delete {root} and run again")
    trained = list(clf.info.labels)  # the model's score order
    reference = clf._reference
    centre = reference.centre()
    classes = list(trained) + list(held)
    test_paths, test_y = _files(root / "data" / "test", classes)
    support_paths, support_y = _files(root / "data" / "support", classes)
    print(f"[{name}] embedding {len(test_paths)} test and {len(support_paths)} support images ...", flush=True)
    tp, te = _outputs(clf, test_paths)
    _, se = _outputs(clf, support_paths)
    k = len(trained)
    is_trained = test_y < k
    base = float((tp[is_trained].argmax(1) == test_y[is_trained]).mean())
    rows: List[Dict[str, Any]] = []
    check: Dict[str, Any] = {}
    for n in SHOTS:
        enrolled_acc, trained_acc, overall = [], [], []
        for d in range(DRAWS):
            rng = np.random.default_rng([d, n])
            chosen = {c: rng.choice(np.flatnonzero(support_y == k + j), n, replace=False) for j, c in enumerate(held)}
            es = EnrolledSet((), centre)
            for c in held:
                es = es.with_class(enrol(c, se[chosen[c]], reference, centre))
            pred = np.array([es.combine(p, e).argmax() for p, e in zip(tp, te)])
            enrolled_acc.append(float((pred[~is_trained] == test_y[~is_trained]).mean()))
            trained_acc.append(float((pred[is_trained] == test_y[is_trained]).mean()))
            overall.append(float((pred == test_y).mean()))
            if n == 5 and d == 0:
                check = _api_check(bundle, root, held, chosen, support_paths, test_paths, pred, classes)
        rows.append({"shots": n, "enrolled_accuracy_mean": float(np.mean(enrolled_acc)), "enrolled_accuracy_sd": float(np.std(enrolled_acc)),
                     "enrolled_accuracy_min": float(np.min(enrolled_acc)),
                     "trained_accuracy_mean": float(np.mean(trained_acc)), "trained_change_pp_mean": round(100 * (np.mean(trained_acc) - base), 2),
                     "trained_change_pp_worst": round(100 * (np.min(trained_acc) - base), 2),
                     "overall_accuracy_mean": float(np.mean(overall)), "draws": {"enrolled": enrolled_acc, "trained": trained_acc}})
        print(f"[{name}] {n:>2} shots: enrolled {100 * rows[-1]['enrolled_accuracy_mean']:.1f} % "
              f"(sd {100 * rows[-1]['enrolled_accuracy_sd']:.1f}), trained {100 * base:.1f} -> {100 * np.mean(trained_acc):.1f} %", flush=True)
    report = json.loads((bundle / "conversion_report.json").read_text())
    return {"dataset": name, "trained_classes": list(trained), "held_out": list(held), "test_images": {"trained": int(is_trained.sum()),
            "enrolled": int((~is_trained).sum())}, "trained_accuracy_before": base, "rows": rows, "api_check": check,
            "embedding_size": reference.size, "embedding_cosine_float_vs_int8": report.get("embedding"),
            "int8_accuracy_on_support": report.get("quant_accuracy")}


def _api_check(bundle: Path, root: Path, held, chosen, support_paths, test_paths, pred, classes) -> Dict[str, Any]:
    """One draw through the public API on files: Classifier.enroll, then Classifier.__call__."""
    from edgesight.edge.classifier import Classifier

    copy = root / "int8-enrolled"
    shutil.rmtree(copy, ignore_errors=True)
    clf = Classifier(bundle)
    for c in held:
        clf.enroll(c, [support_paths[i] for i in chosen[c]], out=copy)
        clf = Classifier(copy)
    sample = list(range(0, len(test_paths), max(1, len(test_paths) // 200)))
    labels = [clf(test_paths[i]).label for i in sample]
    same = sum(lab == classes[pred[i]] for lab, i in zip(labels, sample))
    return {"images": len(sample), "same_label": same}


def table(results: List[Dict[str, Any]], settings: Dict[str, Any]) -> None:
    header = ["dataset (held out)", "shots", "enrolled classes % (sd, worst of 5)", "trained classes % before → after",
              "change pp (worst draw)", "goal", "met"]
    rows = []
    for r in results:
        goal = GOALS[r["dataset"]]
        for row in r["rows"]:
            met = row["enrolled_accuracy_mean"] >= goal and row["trained_change_pp_mean"] >= -MAX_TRAINED_LOSS_PP
            rows.append([f"{r['dataset']} ({', '.join(r['held_out'])})", row["shots"],
                         f"{100 * row['enrolled_accuracy_mean']:.1f} ({100 * row['enrolled_accuracy_sd']:.1f}, {100 * row['enrolled_accuracy_min']:.1f})",
                         f"{100 * r['trained_accuracy_before']:.1f} → {100 * row['trained_accuracy_mean']:.1f}",
                         f"{row['trained_change_pp_mean']:+.2f} ({row['trained_change_pp_worst']:+.2f})",
                         f"≥ {100 * goal:.0f} %, ≥ -{MAX_TRAINED_LOSS_PP:.0f} pp" if row["shots"] == 5 else "-",
                         ("yes" if met else "**no**") if row["shots"] == 5 else "-"])
    note = (f"`python -m benchmarks.fewshot` on {settings['machine']['cpu']} ({settings['machine']['cores']} cores), "
            f"{settings['machine']['date']}. cnn_small int8 bundles; each held-out class enrolled from n support images "
            f"({DRAWS} random draws), scored on test images of every class.")
    update_readme_table("fewshot", header, rows, note=note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(DATASETS))
    a = ap.parse_args()
    results_path = ROOT / "results" / "fewshot.json"
    previous = {r["dataset"]: r for r in json.loads(results_path.read_text())["results"]} if results_path.exists() else {}
    for name in ([a.only] if a.only else list(DATASETS)):
        cfg = DATASETS[name]
        root = WORK / name
        root.mkdir(parents=True, exist_ok=True)
        trained, held = (_prepare_signs if name == "signs" else _prepare_fashion)(root, cfg)
        timing = _train_and_convert(name, root, cfg, trained)
        result = evaluate(name, root, trained, held)
        result.update(settings={k: v for k, v in cfg.items()}, **timing)
        previous[name] = result
    results = [previous[n] for n in DATASETS if n in previous]
    out = {"machine": machine(), "shots": SHOTS, "draws": DRAWS, "goals": GOALS, "max_trained_loss_pp": MAX_TRAINED_LOSS_PP,
           "results": results, "earlier_attempts": EARLIER}
    save_result("fewshot", out)
    table(results, out)


if __name__ == "__main__":
    main()
