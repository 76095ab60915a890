"""``edgesight train``: dataset -> trained Keras model in a run folder.

Run folder contents: ``model.keras`` (the inference model, without augmentation), ``labels.txt``,
``model.json`` (preprocessing spec), ``config.yaml``, ``split.json``, ``skipped.txt``,
``history.json``, ``training_curves.png``, ``metrics.json``, ``confusion_matrix.png``, and
``errors.png`` (Grad-CAM maps of the misclassified test images) when there are any.
It is assembled in ``<out>.partial`` and moved into place only when complete.
"""

from __future__ import annotations

import logging
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgesight.edge.errors import ConfigError, EdgesightError
from edgesight.edge.fsutil import replace_dir, write_json
from .metrics import format_report
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, write_model_info
from .backbones import Backbone, build_classifier, get_backbone, has_weights
from .config import TrainConfig
from .data import Split, format_skipped, make_split, scan_dataset, write_skipped
from .rundir import OWNER_FILE, TrainResult, check_out, prepare_run_dir  # noqa: F401 (part of this module's interface)

log = logging.getLogger("edgesight.train")
# Training images whose statistics set the batch norm of a network trained from scratch.
BN_IMAGES = 256


def _tf():
    from .tf import import_tensorflow

    return import_tensorflow()


def class_weights(labels: List[int], num_classes: int) -> Dict[int, float]:
    """Inverse-frequency weights, ``n / (k * n_c)``, so every class weighs the same in total."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(float)
    total = counts.sum()
    return {i: float(total / (num_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


def _strategy(name: str):
    tf = _tf()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    # multiworker: train() joined the cluster before TensorFlow ran anything; the model trains
    # outside any strategy scope, the workers exchanging gradients and logs (see .cluster).
    return tf.distribute.get_strategy()


def _merge(history: Dict[str, List[float]], h: Dict[str, List[float]]) -> None:
    for k, v in h.items():
        if k in ("learning_rate", "lr"):
            k = "learning_rate"
        history.setdefault(k, []).extend(float(x) for x in v)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a classifier as configured and write the run folder.

    Raises:
        DatasetError, ConfigError: bad data or options, before any training starts.
    """
    t0 = time.time()
    if not cfg.data:
        raise ConfigError("no training data given: edgesight train DATA --out RUN")
    backbone = get_backbone(cfg.model)
    height, width = cfg.input_size(backbone.default_size)
    weights = cfg.weights or backbone.default_weights
    spec = PreprocessSpec(
        height=height,
        width=width,
        color=cfg.color,
        resize=cfg.resize,
        interpolation=cfg.interpolation,
        model_mean=(float(backbone.mean),),
        model_std=(float(backbone.std),),
    )
    start = None
    if cfg.init_from:
        from .initfrom import check_fits, open_run

        start = open_run(cfg.init_from)
        check_fits(start, backbone.name, spec)
    if min(height, width) < backbone.min_size:
        raise ConfigError(f"{backbone.name} needs inputs of at least {backbone.min_size}x{backbone.min_size}, got {height}x{width}; raise --img-size")
    pretrained = has_weights(backbone, weights)
    if cfg.fine_tune_epochs and not pretrained:
        raise ConfigError(f"{backbone.name} with --weights {weights} trains from scratch; --fine-tune-epochs applies to pretrained weights (imagenet or a file)")
    out = Path(cfg.out)
    check_out(out, cfg.overwrite)
    # Validate the data before creating anything on disk.
    scanned = scan_dataset(Path(cfg.data), progress=progress)
    split = make_split(scanned, cfg.val_split, cfg.test_split, cfg.seed)
    from .recipe import choose

    resolved, choices = choose(cfg.updated(img_height=height, img_width=width, img_size=None, weights=weights), pretrained, split)
    cluster = None
    if cfg.strategy == "multiworker":
        from .cluster import join

        # First TensorFlow work of the process: the collective runtime must start before any other.
        cluster = join(resolved, split)
    # Only the chief writes the run folder; the other workers write to a temporary one.
    staging = prepare_run_dir(out, cfg.overwrite) if cluster is None or cluster.is_chief else Path(tempfile.mkdtemp(prefix="edgesight-worker-"))
    resolved.save(staging / "config.yaml")
    split.save(staging / "split.json")
    write_skipped(staging / "skipped.txt", split.skipped)
    _print_data_summary(split)
    for line in choices:
        print(line)

    info = ModelInfo(
        labels=split.classes,
        preprocess=spec,
        backbone=backbone.name,
        source={"run": str(out.resolve()), "data": split.source, "weights": weights,
                **({"init_from": str(start.run.resolve())} if start is not None else {})},
    )
    write_model_info(staging, info)

    try:
        fit = _fit(resolved, backbone, spec, split, staging, progress, start, cluster)
    except Exception as e:
        if cluster is None:
            raise
        # A failed multi-worker run leaves nothing behind on any worker.
        shutil.rmtree(staging, ignore_errors=True)
        raise (cluster.failure(e) or e) from e
    if cluster is not None and not cluster.is_chief:
        return _worker_done(cluster, staging, out, fit, t0)
    history, interrupted, core = fit.history, fit.interrupted, fit.core

    # The best model was checkpointed during training; make sure the file holds those weights.
    if not (staging / "model.keras").exists():
        from .callbacks import save_model

        save_model(core, staging)

    from .evaluate import report_for
    from .plots import plot_confusion_matrix, plot_training_curves

    eval_split = "test" if split.test else "val"
    samples = split.samples(eval_split)
    metrics: Dict[str, Any] = {}
    if samples:
        metrics = report_for(core, info, samples, batch_size=max(32, cfg.batch_size))
        metrics["split"] = eval_split
        plot_confusion_matrix(metrics["confusion_matrix"], info.labels, staging / "confusion_matrix.png", title=f"{eval_split} split")
        from .explain import ERRORS_FILE, errors_summary, write_errors_grid

        metrics["errors"] = write_errors_grid(core, info, samples, staging / ERRORS_FILE)
    metrics.update({"best_epoch": fit.best_epoch + 1, "epochs_run": len(history.get("loss", [])), "interrupted": interrupted,
                    "time_limited": fit.time_limited, "skipped_files": len(split.skipped), "choices": choices})
    if start is not None:
        metrics["init_from"] = {"run": str(start.run.resolve()), **fit.init}
    if cluster is not None:
        metrics["distributed"] = cluster.distributed(resolved)
    if samples and cfg.probe and pretrained and not interrupted:
        from .probe import linear_probe

        metrics["linear_probe"] = linear_probe(backbone, spec, weights, cfg.alpha, split, eval_split, seed=cfg.seed, cached=fit.cached)
    metrics["seconds"] = {**fit.seconds, "total": round(time.time() - t0, 2)}
    write_json(staging / "metrics.json", metrics)
    write_json(staging / "history.json", {"fine_tune_start_epoch": fit.fine_tune_start, **history})
    if history.get("loss"):
        plot_training_curves(history, staging / "training_curves.png", fit.fine_tune_start)
    (staging / OWNER_FILE).unlink(missing_ok=True)
    replace_dir(staging, out)
    if cluster is not None:
        cluster.release()
    secs = time.time() - t0
    if samples:
        print(format_report(metrics))
        print(errors_summary(metrics["errors"], eval_split))
    if "linear_probe" in metrics:
        from .probe import verdict

        print(verdict(metrics["accuracy"], metrics["linear_probe"]))
    why = "stopped early by request; " if interrupted else "stopped at the time limit; " if fit.time_limited else ""
    print(f"{why}run folder: {out} ({secs:.0f} s)")
    return TrainResult(out, metrics, history, interrupted, secs)


def _worker_done(cluster: Any, staging: Path, out: Path, fit: "Fit", t0: float) -> TrainResult:
    """A worker other than the chief: remove its temporary folder, wait for the chief's run folder."""
    shutil.rmtree(staging, ignore_errors=True)
    cluster.wait_for_chief(out)
    return TrainResult(out, {}, fit.history, fit.interrupted, time.time() - t0)


def _print_data_summary(split: Split) -> None:
    counts = split.counts()
    print(
        f"{len(split.classes)} classes; train {len(split.train)}, val {len(split.val)}, test {len(split.test)} images"
        f" ({split.layout} layout, seed {split.seed})"
    )
    if split.skipped:
        print(format_skipped(split.skipped))
    small = [c for c in split.classes if counts["train"][c] < 5]
    if small:
        print(f"warning: classes with fewer than 5 training images: {', '.join(small)}")


@dataclass
class Fit:
    """What :func:`_fit` hands back to :func:`train`."""

    history: Dict[str, List[float]]
    interrupted: bool
    time_limited: bool
    best_epoch: int
    fine_tune_start: Optional[int]
    core: Any
    seconds: Dict[str, float]
    cached: Dict[str, np.ndarray] = field(default_factory=dict)
    init: Dict[str, List[str]] = field(default_factory=dict)


def _compile(keras, model, optimizer, cfg: TrainConfig) -> None:
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing), metrics=["accuracy"])


def _fine_tune_optimizer(keras, cfg: TrainConfig, train_images: int, lr_scale: int = 1):
    """AdamW with a one-epoch linear warm-up to ``fine_tune_lr`` (times ``lr_scale``), then cosine decay to 0."""
    steps = max(1, -(-train_images // cfg.batch_size))
    total = steps * max(1, cfg.fine_tune_epochs)
    warmup = min(steps, total // 2)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - warmup), alpha=0.0,
                                                      warmup_target=cfg.fine_tune_lr * lr_scale, warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=1e-4)


def _fit(cfg: TrainConfig, backbone: Backbone, spec: PreprocessSpec, split: Split, staging: Path, progress: bool,
         start: Any = None, cluster: Any = None) -> Fit:
    from . import headfit
    from .augment import build_augmentation
    from .callbacks import GracefulStop, TimeLimit, batch_norm_statistics, make_callbacks, save_model
    from .pipeline import load_batch, make_dataset
    from .tf import import_keras

    tf = _tf()
    keras = import_keras()
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    n_classes = len(split.classes)
    train_y = split.label_indices(split.train)
    val_y = split.label_indices(split.val)
    # Several workers: each trains on its shard of the images (padded to the same number of
    # steps), the learning rates scaled with the global batch (see .cluster).
    n = cluster.size if cluster is not None else 1
    train_part = cluster.shard(split.train, pad=True) if cluster is not None else split.train
    reducing = cluster.all_reducing if cluster is not None else (lambda optimizer: optimizer)
    # Transfer learning (a frozen backbone, then fine-tuning) only with loaded weights: a
    # randomly initialised backbone must learn from the first epoch.
    transfer = has_weights(backbone, cfg.weights)
    on_features = transfer and cfg.feature_copies > 0
    fine_tune = transfer and bool(cfg.fine_tune_epochs)
    train_ds = val_ds = None
    if not on_features or fine_tune:
        train_ds = make_dataset([s.path for s in train_part], split.label_indices(train_part), spec, n_classes, cfg.batch_size, training=True, seed=cfg.seed, cache=cfg.cache, cache_dir=staging / "cache")
        if split.val:
            val_ds = make_dataset([s.path for s in split.val], val_y, spec, n_classes, cfg.batch_size, training=False, cache=cfg.cache, cache_dir=staging / "cache")
    strategy = _strategy(cfg.strategy)
    with strategy.scope():
        core, base = build_classifier(backbone, (spec.height, spec.width, spec.channels), n_classes, cfg.weights, cfg.alpha, cfg.dropout, cfg.pooling)
        init: Dict[str, List[str]] = {}
        if start is not None:
            from .initfrom import describe, load_weights

            init = load_weights(core, start, split.classes)
            print(describe(start, init))
        augment = build_augmentation(cfg.augment, cfg.hflip, cfg.seed)
        inputs = keras.Input(core.inputs[0].shape[1:], name="image")
        x = augment(inputs) if augment is not None else inputs
        trainer = keras.Model(inputs, core(x), name="trainer")
        if transfer:
            base.trainable = False
        _compile(keras, trainer, reducing(keras.optimizers.Adam(cfg.learning_rate * n)), cfg)
    if cluster is not None:
        cluster.sync_weights(core)
    monitor = "val_loss" if split.val else "loss"
    weights = class_weights(train_y, n_classes) if cfg.class_weights == "balanced" else None
    verbose = 1 if (progress and sys.stdout.isatty()) else 2
    history: Dict[str, List[float]] = {}
    seconds: Dict[str, float] = {}
    cached: Dict[str, np.ndarray] = {}
    fine_tune_start: Optional[int] = None
    limit = TimeLimit(cfg.time_limit)
    with GracefulStop(at_epoch_end=cluster is not None) as stopper:
        # Around every distributed fit: the workers' logs averaged first, their stops agreed last.
        first, last = cluster.callbacks(keras, stopper) if cluster is not None else (None, None)
        spread = (lambda cbs: [first, *cbs, last]) if cluster is not None else (lambda cbs: cbs)
        t0 = time.monotonic()
        limit.start()
        if on_features:
            feats = headfit.feature_model(core)
            copies = cfg.feature_copies if augment is not None else 1
            print(f"phase 1: caching {backbone.name} features of {len(split.train)} training images"
                  + (f" and {copies - 1} augmented copies of each" if copies > 1 else "") + ", then training the head on them")
            mine = cluster.shard if cluster is not None else (lambda samples: samples)
            train_x = headfit.extract(feats, mine(split.train), spec, augment, copies, progress, "train features")
            val_x = headfit.extract(feats, mine(split.val), spec, progress=progress, desc="val features") if split.val else None
            if cluster is not None:
                # Each worker computed its shard; every worker fits the head on all of them.
                train_x = cluster.gather_samples(train_x, len(split.train), axis=1)
                val_x = cluster.gather_samples(val_x, len(split.val), axis=1) if val_x is not None else None
            cached = {"train": train_x[0], **({"val": val_x[0]} if val_x is not None else {})}
            seconds["features"] = round(time.monotonic() - t0, 2)
            callbacks, best = make_callbacks(keras, core, staging, monitor, cfg, stopper, save=False)
            callbacks.append(limit.callback(keras))
            _merge(history, headfit.fit_head(core, train_x, train_y, val_x, val_y, cfg, n_classes, callbacks, weights, verbose))
            if best.best_weights is not None:
                core.set_weights(best.best_weights)
            save_model(core, staging)
        else:
            callbacks, best = make_callbacks(keras, core, staging, monitor, cfg, stopper)
            callbacks.append(limit.callback(keras))
            if not transfer:
                # First, so that the checkpoint and early stopping see the statistics it sets.
                sample = random.Random(cfg.seed).sample(list(train_part), min(len(train_part), BN_IMAGES))
                callbacks.insert(0, batch_norm_statistics(keras, core, load_batch([s.path for s in sample], spec), cfg.batch_size))
            h = trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=weights, callbacks=spread(callbacks), verbose=verbose, shuffle=False)
            _merge(history, h.history)
        seconds["phase1"] = round(time.monotonic() - t0, 2)
        stop = stopper.requested or limit.reached
        if fine_tune and not (cluster.any(stop) if cluster is not None else stop):
            t1 = time.monotonic()
            fine_tune_start = len(history.get("loss", []))
            if best.best_weights is not None:
                core.set_weights(best.best_weights)
            if cluster is not None:
                cluster.sync_weights(core)
            with strategy.scope():
                _unfreeze_top(base, cfg.fine_tune_layers)
                _compile(keras, trainer, reducing(_fine_tune_optimizer(keras, cfg, len(train_part), n)), cfg)
            print(f"phase 2: fine-tuning the top {cfg.fine_tune_layers or 'all'} layers of {backbone.name} for up to "
                  f"{cfg.fine_tune_epochs} epochs (AdamW, warm-up to {cfg.fine_tune_lr * n:g}, cosine decay)")
            callbacks, best2 = make_callbacks(keras, core, staging, monitor, cfg, stopper, reduce_lr=False)
            callbacks.append(limit.callback(keras))
            best2.best, best2.best_weights, best2.best_epoch = best.best, best.best_weights, best.best_epoch
            h = trainer.fit(train_ds, validation_data=val_ds, initial_epoch=fine_tune_start, epochs=fine_tune_start + cfg.fine_tune_epochs,
                            class_weight=weights, callbacks=spread(callbacks), verbose=verbose, shuffle=False)
            _merge(history, h.history)
            best = best2
            seconds["phase2"] = round(time.monotonic() - t1, 2)
    if best.best_weights is not None:
        core.set_weights(best.best_weights)
    shutil.rmtree(staging / "cache", ignore_errors=True)
    return Fit(history, stopper.requested, limit.reached, best.best_epoch, fine_tune_start, core, seconds, cached, init)


def _unfreeze_top(base, n_layers: int) -> None:
    """Make the top ``n_layers`` of ``base`` trainable (all when 0); batch-norm stays frozen."""
    from .tf import import_keras

    keras = import_keras()

    base.trainable = True
    layers = base.layers
    cut = 0 if n_layers <= 0 else max(0, len(layers) - n_layers)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)


def run_train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Entry point used by the CLI; keeps EdgesightError as-is and wraps OS errors."""
    try:
        if cfg.task == "anomaly" and cfg.anomaly_method == "autoencoder":
            from .autoencoder import train_autoencoder

            return train_autoencoder(cfg, progress)
        if cfg.task == "anomaly":
            from .anomaly import train_anomaly

            return train_anomaly(cfg, progress)
        return train(cfg, progress)
    except OSError as e:
        raise EdgesightError(f"{e.filename or cfg.out}: {e.strerror or e}; free some disk space or choose another --out") from e
