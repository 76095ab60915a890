"""Training input pipeline: edgesight's tf.data pipeline vs ``keras.utils.image_dataset_from_directory``.

    python -m benchmarks.input_pipeline

Same image folder (generated traffic signs, ``--per-class`` PNGs per class at ``--source-size``
pixels, 10 classes), same ``cnn_small`` model at ``--img-size``, same batch size, ``--epochs``
epochs of ``model.fit`` each. edgesight's pipeline decodes with the runtime's OpenCV code in
parallel, caches decoded images after the first epoch and prefetches; Keras' loader runs with
its defaults (tf.io decode and bilinear resize on every epoch, shuffled, batch 32). Images per
second are given for the first epoch (decode included for both) and for the later epochs.
Also timed: the loader alone, without a model: the first pass over a fresh dataset and a second
pass over the same one (best of ``--repeats``, the two pipelines alternated).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from benchmarks.common import machine, save_result, update_readme_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--source-size", type=int, default=160)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="loader passes per pipeline (best kept)")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from edgesight.edge.model.spec import PreprocessSpec
    from edgesight.training.backbones import build_classifier, get_backbone
    from edgesight.training.data import make_split, scan_dataset
    from edgesight.training.pipeline import make_dataset
    from edgesight.training.synth import write_signs

    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "signs"
        write_signs(folder, per_class=a.per_class, size=a.source_size)
        scanned = scan_dataset(folder, progress=False)
        split = make_split(scanned, val_fraction=0.0, test_fraction=0.0)
        samples = split.samples("train")
        n = len(samples)
        classes = list(scanned.classes)
        spec = PreprocessSpec(a.img_size, a.img_size)

        def ours():
            return make_dataset([s.path for s in samples], split.label_indices(samples), spec, len(classes), a.batch_size,
                                training=True, one_hot=False)

        def keras_default():
            return keras.utils.image_dataset_from_directory(str(folder), image_size=(a.img_size, a.img_size), batch_size=a.batch_size,
                                                            seed=0, verbose=False)

        def passes(make):
            ds = make()
            out = []
            for _ in range(2):  # a fresh dataset's first pass decodes; the second shows caching
                t0 = time.perf_counter()
                for _ in ds:
                    pass
                out.append(n / (time.perf_counter() - t0))
            return out

        loader: Dict[str, List[List[float]]] = {"ours": [], "keras": []}
        for _ in range(a.repeats):  # alternated; the first round also warms both up
            loader["ours"].append(passes(ours))
            loader["keras"].append(passes(keras_default))
        for name, make, key in (("edgesight tf.data", ours, "ours"), ("keras image_dataset_from_directory", keras_default, "keras")):
            first = max(p[0] for p in loader[key])
            second = max(p[1] for p in loader[key])
            keras.utils.set_random_seed(0)
            model, _ = build_classifier(get_backbone("cnn_small"), (a.img_size, a.img_size, 3), len(classes), None)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            ds = make()
            times: List[float] = []

            class Clock(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    self.t = time.perf_counter()

                def on_epoch_end(self, epoch, logs=None):
                    times.append(time.perf_counter() - self.t)

            model.fit(ds, epochs=a.epochs, verbose=0, callbacks=[Clock()])
            later = times[1:] or times
            rows.append({"pipeline": name, "images": n, "loader_only_img_s": round(first, 1), "loader_second_pass_img_s": round(second, 1),
                         "fit_first_epoch_img_s": round(n / times[0], 1),
                         "fit_later_epochs_img_s": round(n * len(later) / sum(later), 1), "epoch_seconds": [round(t, 2) for t in times]})
            print(rows[-1], flush=True)
            del ds
            tf.keras.backend.clear_session() if hasattr(tf.keras.backend, "clear_session") else None
    ours_row, theirs = rows
    ratios = {k: round(ours_row[k] / theirs[k], 2) for k in ("loader_only_img_s", "loader_second_pass_img_s", "fit_first_epoch_img_s", "fit_later_epochs_img_s")}
    m = machine()
    save_result("input_pipeline", {"benchmark": "input_pipeline", "machine": m, "args": vars(a), "rows": rows, "edgesight_over_keras": ratios})
    update_readme_table(
        "input_pipeline",
        ["pipeline", "loader alone, first pass img/s", "loader alone, second pass img/s", "fit, epoch 1 img/s", "fit, later epochs img/s"],
        [[r["pipeline"], r["loader_only_img_s"], r["loader_second_pass_img_s"], r["fit_first_epoch_img_s"], r["fit_later_epochs_img_s"]] for r in rows]
        + [["edgesight / keras", f"{ratios['loader_only_img_s']:.2f}x", f"{ratios['loader_second_pass_img_s']:.2f}x", f"{ratios['fit_first_epoch_img_s']:.2f}x",
            f"{ratios['fit_later_epochs_img_s']:.2f}x"]],
        note=f"`python -m benchmarks.input_pipeline --per-class {a.per_class} --source-size {a.source_size} --img-size {a.img_size} "
             f"--epochs {a.epochs}` on {m['cpu']} ({m['cores']} cores), {m['date']}: {rows[0]['images']} PNGs, cnn_small, batch {a.batch_size}.",
    )


if __name__ == "__main__":
    main()
