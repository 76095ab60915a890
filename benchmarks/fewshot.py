"""Few-shot enrolment: classes added on the device from 1, 5 or 10 photos, without training.

    python -m benchmarks.fewshot                          # every row (about 1 h on 2 busy cores)
    python -m benchmarks.fewshot --only signs_cnn_small,fashion_effl0_96

For each row, ``edgesight train`` learns all classes of a dataset but a few held out (a seeded
draw, the same for every row of the dataset), ``edgesight convert --quant int8`` makes the
bundle with its embedding output (``--eval`` names a separate "support" set of the trained
classes, which becomes the bundle's reference embeddings), then each held-out class is enrolled
from ``n`` support images of it (``n`` = 1, 5, 10; 5 random draws each) and the bundle
classifies a test set of every class. Reported: accuracy on the enrolled classes' test images,
and on the trained classes' test images before and after enrolment (the change in points).

* signs: the traffic-sign renderer (``training/synth/signs.py``), 10 classes, 3 held out; 100
  (cnn_small: 200) training, 30 support and 100 test images per class, trained without
  horizontal flips (turn_left mirrors turn_right).
* fashion: Fashion-MNIST (Debian ``dataset-fashion-mnist``), 10 classes, 2 held out; 300
  training images per trained class, 30 support images per class from the official training
  images the model never saw, and 300 official test images per class.

Rows: ``cnn_small`` from scratch at 48x48 (signs) or 32x32 (fashion); EfficientNet-Lite0 with
its ImageNet weights kept (``--fine-tune-epochs 0``: the head is trained on the pooled
features, so the embedding is the generic one) at 96x96, and for signs also fine-tuned at 96
and kept at 224.

``*_max`` rows: the ``cnn_small`` rows trained with ``--pooling max``.

``*_seen`` rows: the ``cnn_small`` rows trained on the held-out classes too (as many training
images of each, ``train_seen/``), their scores and reference embeddings then left out, so that
the same enrolment scores them beside the other classes: what enrolment reaches when the
embedding has learnt the new classes, against what it reaches with an embedding that has not.

The scores are computed with the runtime's own code (:class:`~edgesight.edge.model.enroll.EnrolledSet`
on the int8 embeddings) once per draw from one pass of the interpreter over the images; one draw
per row goes through ``Classifier.enroll`` and ``Classifier.__call__`` on the files, which must
give the same labels. Work goes to ``benchmarks/work/fewshot/``; finished data, training and
conversion are reused.
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
HELD_OUT = {"signs": 3, "fashion": 2}
TEST_PER_CLASS = {"signs": 100, "fashion": 300}
GOALS = {"signs": 0.90, "fashion": 0.75}
MAX_TRAINED_LOSS_PP = 1.0

EFFL0 = ["--model", "efficientnet_lite0", "--fine-tune-epochs", "0"]
ROWS: Dict[str, Dict[str, Any]] = {
    "signs_cnn_small": {"dataset": "signs", "size": 48, "train_per_class": 200, "model": "cnn_small",
                        "train": ["--img-size", "48", "--epochs", "25", "--no-hflip", "--early-stopping", "6"]},
    "signs_effl0_96": {"dataset": "signs", "size": 96, "train_per_class": 100, "model": "efficientnet_lite0 (ImageNet, kept)",
                       "train": [*EFFL0, "--img-size", "96", "--no-hflip"]},
    "signs_effl0_96_ft": {"dataset": "signs", "size": 96, "train_per_class": 100, "model": "efficientnet_lite0 (fine-tuned)",
                          "train": ["--model", "efficientnet_lite0", "--img-size", "96", "--no-hflip"]},
    "signs_effl0_224": {"dataset": "signs", "size": 224, "train_per_class": 100, "model": "efficientnet_lite0 (ImageNet, kept)",
                        "train": [*EFFL0, "--img-size", "224", "--no-hflip"]},
    "fashion_cnn_small": {"dataset": "fashion", "size": 32, "train_per_class": 300, "model": "cnn_small",
                          "train": ["--img-size", "32", "--color", "grayscale", "--epochs", "20", "--early-stopping", "5"]},
    "fashion_effl0_96": {"dataset": "fashion", "size": 96, "train_per_class": 300, "model": "efficientnet_lite0 (ImageNet, kept)",
                         "train": [*EFFL0, "--img-size", "96", "--color", "grayscale"]},
}
# The same rows trained with the held-out classes too (their scores left out at evaluation): what
# enrolment gets when the embedding has learnt the new class, not the embedding it is given.
for _name in ("signs_cnn_small", "fashion_cnn_small"):
    ROWS[f"{_name}_seen"] = {**ROWS[_name], "seen": True, "model": ROWS[_name]["model"] + " (held-out classes seen in training)"}
    # global max pooling before the head (train --pooling max): the embedding keeps each channel's strongest response
    ROWS[f"{_name}_max"] = {**ROWS[_name], "model": ROWS[_name]["model"] + " --pooling max", "train": [*ROWS[_name]["train"], "--pooling", "max"]}


def _held_out(classes: Sequence[str], k: int) -> List[str]:
    return sorted(np.random.default_rng(0).choice(list(classes), k, replace=False).tolist())


def held_classes(dataset: str) -> List[str]:
    """The classes a dataset's rows hold out (the same draw as the data was written with)."""
    if dataset == "signs":
        from edgesight.training.synth import SIGN_CLASSES as classes
    else:
        from benchmarks.prepare_data import FASHION_CLASSES as classes
    return _held_out(classes, HELD_OUT[dataset])


def data_dir(cfg: Dict[str, Any]) -> Path:
    """The dataset of a row: ``train/`` (trained classes), ``support/``, ``test/``."""
    if cfg["dataset"] == "signs":
        return WORK / "data" / f"signs_{cfg['size']}_{cfg['train_per_class']}"
    return WORK / "data" / f"fashion_{cfg['train_per_class']}"


def _prepare_signs(root: Path, size: int, per_class: int) -> None:
    from edgesight.training.synth import SIGN_CLASSES
    from edgesight.training.synth.signs import write_signs

    held = _held_out(SIGN_CLASSES, HELD_OUT["signs"])
    shutil.rmtree(root, ignore_errors=True)
    write_signs(root / "train", per_class=per_class, size=size, seed=0, classes=[c for c in SIGN_CLASSES if c not in held])
    pool = root / "pool"
    write_signs(pool, per_class=SUPPORT + TEST_PER_CLASS["signs"], size=size, seed=1)
    for c in SIGN_CLASSES:
        for i, p in enumerate(sorted((pool / c).glob("*.png"))):
            dest = root / ("support" if i < SUPPORT else "test") / c
            dest.mkdir(parents=True, exist_ok=True)
            p.rename(dest / p.name)
    shutil.rmtree(pool)


def _prepare_fashion(root: Path, per_class: int) -> None:
    from benchmarks.prepare_data import FASHION_CLASSES, FASHION_DIR, _find, _idx

    held = _held_out(FASHION_CLASSES, HELD_OUT["fashion"])
    shutil.rmtree(root, ignore_errors=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _idx(_find(f"{prefix}-images", FASHION_DIR)), _idx(_find(f"{prefix}-labels", FASHION_DIR))
        seen: Dict[int, int] = {}
        for i, (img, y) in enumerate(zip(images, labels)):
            c, n = FASHION_CLASSES[int(y)], seen.get(int(y), 0)
            seen[int(y)] = n + 1
            if split == "train":
                # the first images of a trained class train; the next SUPPORT are never seen
                if c not in held and n < per_class:
                    part = "train"
                elif per_class <= n < per_class + SUPPORT:
                    part = "support"
                else:
                    continue
            elif n < TEST_PER_CLASS["fashion"]:
                part = "test"
            else:
                continue
            folder = root / part / c
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{split}_{i:05d}.png"), img)


def prepare(cfg: Dict[str, Any]) -> Path:
    root = data_dir(cfg)
    if not (root / "done").exists():
        print(f"[{root.name}] writing the images ...", flush=True)
        if cfg["dataset"] == "signs":
            _prepare_signs(root, cfg["size"], cfg["train_per_class"])
        else:
            _prepare_fashion(root, cfg["train_per_class"])
        trained = sorted(p.name for p in (root / "train").iterdir())
        for c in trained:  # the trained classes' support images: convert's --eval, the reference embeddings
            shutil.copytree(root / "support" / c, root / "support_trained" / c)
        (root / "done").write_text("")
    return root


def _train_seen(root: Path, cfg: Dict[str, Any]) -> Path:
    """``train_seen/``: ``train/`` and as many training images of each held-out class."""
    out, done = root / "train_seen", root / "train_seen.done"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(root / "train", out)
    if cfg["dataset"] == "signs":
        from edgesight.training.synth.signs import write_signs

        write_signs(out, per_class=cfg["train_per_class"], size=cfg["size"], seed=2, classes=held_classes("signs"))
    else:
        from benchmarks.prepare_data import FASHION_CLASSES, FASHION_DIR, _find, _idx

        held = held_classes("fashion")
        seen: Dict[str, int] = {}
        for i, (img, y) in enumerate(zip(_idx(_find("train-images", FASHION_DIR)), _idx(_find("train-labels", FASHION_DIR)))):
            c = FASHION_CLASSES[int(y)]
            if c in held and seen.get(c, 0) < cfg["train_per_class"]:  # the images before the support ones
                seen[c] = seen.get(c, 0) + 1
                (out / c).mkdir(exist_ok=True)
                cv2.imwrite(str(out / c / f"train_{i:05d}.png"), img)
    done.write_text("")
    return out


def _train_and_convert(name: str, cfg: Dict[str, Any], data: Path) -> Dict[str, Any]:
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    run, bundle, log = work / "run", work / "int8", work / "log.txt"
    timing: Dict[str, Any] = {}
    if not (run / "metrics.json").exists():
        print(f"[{name}] training {cfg['model']} ...", flush=True)
        train = _train_seen(data, cfg) if cfg.get("seen") else data / "train"
        timing["train_s"] = round(run_edgesight(["train", str(train), "--out", str(run), "--overwrite", "--seed", "0",
                                                 *cfg["train"]], log), 1)
    if not (bundle / "conversion_report.json").exists():
        print(f"[{name}] converting to int8 with the embedding output ...", flush=True)
        timing["convert_s"] = round(run_edgesight(["convert", str(run), "--quant", "int8", "--out", str(bundle),
                                                   "--eval", str(data / "support_trained")], log), 1)
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


def evaluate(name: str, cfg: Dict[str, Any], data: Path) -> Dict[str, Any]:
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.model.enroll import EnrolledSet, enrol

    bundle = WORK / name / "int8"
    clf = Classifier(bundle, threads=2)
    labels = list(clf.info.labels)  # the model's score order
    every = sorted(p.name for p in (data / "test").iterdir())
    held = sorted(set(every) - set(labels)) or held_classes(cfg["dataset"])
    trained = [c for c in labels if c not in held]
    keep = [labels.index(c) for c in trained]
    reference = clf._reference
    if len(trained) < len(labels):  # a "seen" row: the held-out classes' scores and references left out
        remap = np.full(len(labels), -1)
        remap[keep] = np.arange(len(keep))
        mask = remap[reference.labels] >= 0
        reference = type(reference)(reference.embeddings[mask], remap[reference.labels[mask]])
    centre = reference.centre()
    classes = trained + held
    test_paths, test_y = _files(data / "test", classes)
    support_paths, support_y = _files(data / "support", classes)
    print(f"[{name}] embedding {len(test_paths)} test and {len(support_paths)} support images ...", flush=True)
    tp, te = _outputs(clf, test_paths)
    _, se = _outputs(clf, support_paths)
    k = len(trained)
    is_trained = test_y < k
    prototypes = _prototypes_only(reference, centre, se, support_y, te, test_y, k, held)
    print(f"[{name}] prototypes only, 5 shots: enrolled {100 * prototypes['enrolled_accuracy']:.1f} %, "
          f"trained {100 * prototypes['trained_accuracy']:.1f} %", flush=True)
    common = {"row": name, "dataset": cfg["dataset"], "model": cfg["model"], "img_size": cfg["size"], "train_args": cfg["train"],
              "train_per_class": cfg["train_per_class"], "trained_classes": trained, "held_out": held, "seen": bool(cfg.get("seen")),
              "test_images": {"trained": int(is_trained.sum()), "enrolled": int((~is_trained).sum())}, "prototypes_only_5_shots": prototypes}
    if cfg.get("seen"):  # the head has learnt the held-out classes: only the embedding is compared
        return common
    base = float((tp[is_trained].argmax(1) == test_y[is_trained]).mean())
    rows: List[Dict[str, Any]] = []
    check: Dict[str, Any] = {}
    for n in SHOTS:
        enrolled_acc, trained_acc, per_class = [], [], {c: [] for c in held}
        for d in range(DRAWS):
            rng = np.random.default_rng([d, n])
            chosen = {c: rng.choice(np.flatnonzero(support_y == k + j), n, replace=False) for j, c in enumerate(held)}
            es = EnrolledSet((), centre)
            for c in held:
                es = es.with_class(enrol(c, se[chosen[c]], reference, centre))
            pred = np.array([es.combine(p, e).argmax() for p, e in zip(tp, te)])
            enrolled_acc.append(float((pred[~is_trained] == test_y[~is_trained]).mean()))
            trained_acc.append(float((pred[is_trained] == test_y[is_trained]).mean()))
            for j, c in enumerate(held):
                per_class[c].append(float((pred[test_y == k + j] == k + j).mean()))
            if n == 5 and d == 0:
                check = _api_check(bundle, held, chosen, support_paths, test_paths, pred, classes)
        rows.append({"shots": n, "enrolled_accuracy_mean": float(np.mean(enrolled_acc)), "enrolled_accuracy_sd": float(np.std(enrolled_acc)),
                     "enrolled_accuracy_min": float(np.min(enrolled_acc)),
                     "enrolled_accuracy_per_class": {c: round(float(np.mean(v)), 4) for c, v in per_class.items()},
                     "trained_accuracy_mean": float(np.mean(trained_acc)), "trained_change_pp_mean": round(100 * (np.mean(trained_acc) - base), 2),
                     "trained_change_pp_worst": round(100 * (np.min(trained_acc) - base), 2),
                     "draws": {"enrolled": enrolled_acc, "trained": trained_acc}})
        print(f"[{name}] {n:>2} shots: enrolled {100 * rows[-1]['enrolled_accuracy_mean']:.1f} % "
              f"(sd {100 * rows[-1]['enrolled_accuracy_sd']:.1f}), trained {100 * base:.1f} -> {100 * np.mean(trained_acc):.1f} %", flush=True)
    # The trade-off the calibration's prior sets (default: 1 / (K + 1), every class weighing the same).
    tradeoff = []
    for prior in (0.5, 0.25, 1.0 / (k + 1)):
        ea, ta = [], []
        for d in range(DRAWS):
            rng = np.random.default_rng([d, 5])
            es = EnrolledSet((), centre)
            for j, c in enumerate(held):
                es = es.with_class(enrol(c, se[rng.choice(np.flatnonzero(support_y == k + j), 5, replace=False)], reference, centre, prior))
            pred = np.array([es.combine(p, e).argmax() for p, e in zip(tp, te)])
            ea.append(float((pred[~is_trained] == test_y[~is_trained]).mean()))
            ta.append(float((pred[is_trained] == test_y[is_trained]).mean()))
        tradeoff.append({"prior": round(prior, 4), "enrolled_accuracy_mean": round(float(np.mean(ea)), 4),
                         "trained_change_pp_mean": round(100 * (float(np.mean(ta)) - base), 2)})
    probe = _probe_bound(reference, centre, se, support_y, te, test_y, k, len(held))
    report = json.loads((bundle / "conversion_report.json").read_text())
    return {**common, "trained_accuracy_before": base, "rows": rows, "prior_tradeoff_5_shots": tradeoff, "linear_probe_5_shots": probe, "api_check": check, "embedding_size": reference.size, "embedding_agreement": report.get("embedding"),
            "int8_accuracy_on_support": report.get("quant_accuracy")}


def _prototypes_only(reference, centre, se, support_y, te, test_y, k: int, held: Sequence[str]) -> Dict[str, Any]:
    """Nearest prototype over every class, the embedding alone: the trained classes' prototypes
    from the reference embeddings, each held-out class's from 5 shots (the draws of the rows),
    the test images labelled by the largest cosine of centred embeddings."""
    from edgesight.edge.model.enroll import centred, prototype

    u_ref, u_se, u_te = (centred(x, centre) for x in (reference.embeddings, se, te))
    trained_m = [prototype(u_ref[reference.labels == j]) for j in range(k)]
    enrolled, trained, per_class = [], [], {c: [] for c in held}
    for d in range(DRAWS):
        rng = np.random.default_rng([d, 5])
        m = np.stack(trained_m + [prototype(u_se[rng.choice(np.flatnonzero(support_y == k + j), 5, replace=False)]) for j in range(len(held))])
        pred = (u_te @ m.T).argmax(1)
        enrolled.append(float((pred[test_y >= k] == test_y[test_y >= k]).mean()))
        trained.append(float((pred[test_y < k] == test_y[test_y < k]).mean()))
        for j, c in enumerate(held):
            per_class[c].append(float((pred[test_y == k + j] == k + j).mean()))
    return {"enrolled_accuracy": round(float(np.mean(enrolled)), 4), "trained_accuracy": round(float(np.mean(trained)), 4),
            "enrolled_accuracy_per_class": {c: round(float(np.mean(v)), 4) for c, v in per_class.items()}}


def _probe_bound(reference, centre, se, support_y, te, test_y, k: int, m: int) -> Dict[str, float]:
    """What retraining a linear classifier on the same embeddings would do (not possible on the
    device): logistic regression on the reference images and 5 shots of each held-out class
    (first draw), scored on the test images. It bounds what any scoring of this embedding gets."""
    from sklearn.linear_model import LogisticRegression

    from edgesight.edge.model.enroll import centred

    rng = np.random.default_rng([0, 5])
    shots = [rng.choice(np.flatnonzero(support_y == k + j), 5, replace=False) for j in range(m)]
    x = np.concatenate([centred(reference.embeddings, centre)] + [centred(se[i], centre) for i in shots])
    y = np.concatenate([reference.labels] + [np.full(5, k + j) for j in range(m)])
    pred = LogisticRegression(C=10, max_iter=3000, class_weight="balanced").fit(x, y).predict(centred(te, centre))
    trained = test_y < k
    return {"enrolled_accuracy": round(float((pred[~trained] == test_y[~trained]).mean()), 4),
            "trained_accuracy": round(float((pred[trained] == test_y[trained]).mean()), 4)}


def _api_check(bundle: Path, held, chosen, support_paths, test_paths, pred, classes) -> Dict[str, Any]:
    """One draw through the public API on files: Classifier.enroll, then Classifier.__call__."""
    from edgesight.edge.classifier import Classifier

    copy = bundle.parent / "int8-enrolled"
    shutil.rmtree(copy, ignore_errors=True)
    clf = Classifier(bundle)
    for c in held:
        clf.enroll(c, [support_paths[i] for i in chosen[c]], out=copy)
        clf = Classifier(copy)
    sample = list(range(0, len(test_paths), max(1, len(test_paths) // 200)))
    labels = [clf(test_paths[i]).label for i in sample]
    return {"images": len(sample), "same_label": sum(lab == classes[pred[i]] for lab, i in zip(labels, sample))}


def table(results: List[Dict[str, Any]], out: Dict[str, Any]) -> None:
    header = ["dataset (held out)", "model, input", "trained classes % before", "shots", "enrolled classes % (sd, worst draw)",
              "trained classes change pp (worst draw)", "goal (5 shots)", "met"]
    rows = []
    for r in results:
        goal = GOALS[r["dataset"]]
        for row in r.get("rows", []):
            five = row["shots"] == 5
            met = row["enrolled_accuracy_mean"] >= goal and row["trained_change_pp_mean"] >= -MAX_TRAINED_LOSS_PP
            rows.append([f"{r['dataset']} ({', '.join(r['held_out'])})", f"{r['model']}, {r['img_size']}x{r['img_size']}",
                         f"{100 * r['trained_accuracy_before']:.1f}", row["shots"],
                         f"{100 * row['enrolled_accuracy_mean']:.1f} ({100 * row['enrolled_accuracy_sd']:.1f}, {100 * row['enrolled_accuracy_min']:.1f})",
                         f"{row['trained_change_pp_mean']:+.2f} ({row['trained_change_pp_worst']:+.2f})",
                         f"≥ {100 * goal:.0f} %, ≥ -{MAX_TRAINED_LOSS_PP:.0f} pp" if five else "",
                         ("yes" if met else "**no**") if five else ""])
    m = out["machine"]
    note = (f"`python -m benchmarks.fewshot` on {m['cpu']} ({m['cores']} cores), {m['date']}: int8 bundles, each held-out class "
            f"enrolled from n support images ({DRAWS} random draws), scored on test images of every class.")
    update_readme_table("fewshot", header, rows, note=note)
    header = ["dataset (held out)", "model, input", "held-out classes in training", "enrolled classes %", "per class %", "trained classes %"]
    rows = []
    for r in results:
        p = r.get("prototypes_only_5_shots")
        if p:
            rows.append([f"{r['dataset']} ({', '.join(r['held_out'])})", f"{r['model']}, {r['img_size']}x{r['img_size']}",
                         "yes" if r.get("seen") else "no", f"{100 * p['enrolled_accuracy']:.1f}",
                         ", ".join(f"{c} {100 * v:.0f}" for c, v in p["enrolled_accuracy_per_class"].items()), f"{100 * p['trained_accuracy']:.1f}"])
    note = (f"`python -m benchmarks.fewshot`: the embedding alone, 5 shots ({DRAWS} draws): every test image labelled by the nearest "
            "prototype (largest cosine of centred int8 embeddings; trained classes' prototypes from the bundle's reference embeddings, "
            "held-out ones from the shots). `*_seen` rows: the same model and data but trained on the held-out classes too.")
    update_readme_table("fewshot_embedding", header, rows, note=note)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated rows: " + ", ".join(ROWS))
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise SystemExit(f"--only: unknown rows {unknown}; choose from {list(ROWS)}")
    results_path = ROOT / "results" / "fewshot.json"
    previous = {r["row"]: r for r in json.loads(results_path.read_text()).get("results", []) if "row" in r} if results_path.exists() else {}
    for name in names:
        cfg = ROWS[name]
        data = prepare(cfg)
        timing = _train_and_convert(name, cfg, data)
        previous[name] = {**evaluate(name, cfg, data), **{k: v for k, v in timing.items()}}
    results = [previous[n] for n in ROWS if n in previous]
    out = {"machine": machine(), "shots": SHOTS, "draws": DRAWS, "goals": GOALS, "max_trained_loss_pp": MAX_TRAINED_LOSS_PP,
           "results": results}
    save_result("fewshot", out)
    table(results, out)


if __name__ == "__main__":
    main()
