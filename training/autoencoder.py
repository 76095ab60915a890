"""``edgesight train GOOD --task anomaly --method autoencoder``: a convolutional autoencoder
trained from scratch on good images only.

The model takes raw pixels (0-255), squeezes them through four stride-2 convolutions into a
small bottleneck (``h/16 x w/16 x BOTTLENECK``) and rebuilds the image (nearest upsampling and
convolutions, a sigmoid output in [0, 1], the input's ``H x W x C``). Trained to reproduce good
parts, it reproduces what it has never seen badly: the patch score is the squared
reconstruction error averaged over each ``CELL x CELL`` cell (:class:`ReconstructionScorer`),
the image score the largest cell's. Only standard layers (Rescaling, Conv2D, BatchNormalization,
ReLU, UpSampling2D), so the model converts to a full-integer int8 TFLite model.

The good images are split as for the other methods (:func:`split_good`): the held-out part sets
the threshold; of the rest a tenth (``STOP_SHARE``) is kept out of training to watch the
reconstruction loss for early stopping, and the model learns from the others. The run folder is
the one :func:`finish_run` writes, with ``history.json`` (the loss per epoch); ``anomaly`` in
model.json has no arrays.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import ConfigError, DatasetError
from edgesight.edge.fsutil import write_json
from edgesight.edge.model.anomaly import AnomalyDetector, ReconstructionScorer
from edgesight.edge.model.anomaly_fit import threshold_for
from edgesight.edge.model.spec import PreprocessSpec

from .anomaly import finish_run, training_images
from .config import TrainConfig

DEFAULT_SIZE = 128
STRIDE = 16  # four stride-2 convolutions
CELL = 8  # pixels per side of a heatmap cell: a 16x16 grid at 128x128
FILTERS = (32, 64, 128, 192)  # encoder widths, one per stride-2 stage; the decoder mirrors them
BOTTLENECK = 32  # channels at h/16 x w/16: 24x fewer values than the RGB image, so it cannot copy it
DEFAULT_EPOCHS = 30
# Share of the good images left for training that only watch the loss for early stopping
# (with at least MIN_STOP of them; fewer images left: early stopping watches the training loss).
STOP_SHARE = 0.1
MIN_STOP = 4
SHIFT = 0.03  # random shifts up to this share of the side (reflected borders)
BRIGHTNESS = 0.08  # random brightness gain within 1 +- this
# A few hundred images make a few steps per epoch: the default 0.99 leaves the moving statistics
# far from the batches' after 30 epochs, and the inference model reconstructs worse than it trained.
BN_MOMENTUM = 0.9


def check_size(height: int, width: int) -> None:
    """Raises ConfigError unless the input size is a multiple of 16 of at least 32."""
    if height % STRIDE or width % STRIDE or min(height, width) < 2 * STRIDE:
        raise ConfigError(f"--method autoencoder needs an input size that is a multiple of 16 and at least 32, got {height}x{width}; "
                          f"use e.g. --img-size {DEFAULT_SIZE}")


def build_autoencoder(height: int, width: int, channels: int = 3, filters: Sequence[int] = FILTERS,
                      bottleneck: int = BOTTLENECK):
    """Raw pixels (0-255) in, the reconstruction (``H x W x C`` in [0, 1]) out.

    Raises:
        ConfigError: the input size is not a multiple of 16 of at least 32.
    """
    from .tf import import_keras

    check_size(height, width)
    if len(filters) != 4:
        raise ConfigError(f"the autoencoder has 4 stride-2 stages; got {len(filters)} filter widths")
    keras = import_keras()
    layers = keras.layers

    def conv(x, n, stride, name):
        x = layers.Conv2D(n, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((height, width, channels), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(inputs)
    for i, n in enumerate(filters):
        x = conv(x, n, 2, f"enc{i + 1}")
    x = conv(x, bottleneck, 1, "bottleneck")
    x = conv(x, filters[-1], 1, "dec0")
    # Each stage back to the next finer resolution at the width the encoder had there; the last
    # one straight to the image (a full-resolution hidden layer would cost half the model).
    for i, n in enumerate(reversed(filters[:-1])):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{i + 1}_up")(x)
        x = conv(x, n, 1, f"dec{i + 1}")
    x = layers.UpSampling2D(2, interpolation="nearest", name="out_up")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="autoencoder")


def reconstruction_scores(model, pixels: np.ndarray, detector: AnomalyDetector, batch: int = 32) -> np.ndarray:
    """Raw image scores of ``N x H x W x C`` uint8 images through the autoencoder."""
    out: List[np.ndarray] = []
    for i in range(0, len(pixels), batch):
        part = pixels[i:i + batch]
        rec = np.asarray(model(part.astype(np.float32), training=False), np.float32)
        out.append(detector.raw(rec, part)[0])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _dataset(tf, pixels: np.ndarray, batch: int, seed: int, augment: bool):
    """Batches of ``(image, image / 255)``, shuffled, the image lightly shifted and brightened
    first when ``augment`` (the target is the augmented image)."""
    h, w = pixels.shape[1:3]
    pad_h, pad_w = max(1, int(round(SHIFT * h))), max(1, int(round(SHIFT * w)))

    def shift_and_light(x):
        x = tf.cast(x, tf.float32)
        padded = tf.pad(x, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="REFLECT")
        x = tf.image.random_crop(padded, tf.shape(x))
        gain = tf.random.uniform([], 1.0 - BRIGHTNESS, 1.0 + BRIGHTNESS)
        return tf.clip_by_value(x * gain, 0.0, 255.0)

    ds = tf.data.Dataset.from_tensor_slices(pixels).shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(shift_and_light if augment else (lambda x: tf.cast(x, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x: (x, x / 255.0)).batch(batch).prefetch(tf.data.AUTOTUNE)


def _split_stop(paths: Sequence[str], seed: int) -> Tuple[List[str], List[str]]:
    """The training images and those that only watch the loss (none when too few)."""
    n_stop = max(MIN_STOP, int(round(STOP_SHARE * len(paths))))
    if len(paths) - n_stop < 2 * n_stop:
        return list(paths), []
    order = np.random.default_rng(seed + 1).permutation(len(paths))
    return sorted(paths[i] for i in order[n_stop:]), sorted(paths[i] for i in order[:n_stop])


def train_autoencoder(cfg: TrainConfig, progress: bool = True):
    """Train the autoencoder on the good images of ``cfg.data``, set the threshold on held-out
    good images, and write the run folder.

    Returns:
        ``TrainResult`` with the anomaly report as ``metrics`` and the loss history.

    Raises:
        ConfigError: an input size that is not a multiple of 16, or an existing ``--out``.
        DatasetError: no folder, too few good images, or identical ones.
    """
    from .callbacks import GracefulStop, TimeLimit, make_callbacks
    from .pipeline import load_batch
    from .tf import import_keras, import_tensorflow
    from .rundir import TrainResult, prepare_run_dir

    t0 = time.time()
    height, width = cfg.input_size(DEFAULT_SIZE)
    check_size(height, width)
    spec = PreprocessSpec(height=height, width=width, color=cfg.color, resize=cfg.resize, interpolation=cfg.interpolation,
                          model_mean=(0.0,), model_std=(255.0,))
    out = Path(cfg.out)
    good, fit_paths, hold_paths, defects = training_images(cfg, progress)
    learn_paths, stop_paths = _split_stop(fit_paths, cfg.seed)
    epochs = cfg.epochs or DEFAULT_EPOCHS
    grid = (height // CELL, width // CELL)
    print(f"anomaly detection (autoencoder, {height}x{width}) on {len(good)} good images: {len(learn_paths)} to learn from"
          + (f", {len(stop_paths)} to watch for early stopping" if stop_paths else "")
          + f", {len(hold_paths)} held out to set the threshold for {100 * cfg.false_reject:g} % false rejects"
          + (f"; {sum(s.label != 'good' for s in defects)} defect images for the report" if defects else ""))
    if len(hold_paths) * cfg.false_reject < 1:
        print(f"note: with {len(hold_paths)} held-out good images the threshold sits just above the highest of their scores; "
              f"measuring a {100 * cfg.false_reject:g} % false-reject rate needs {int(np.ceil(1 / cfg.false_reject))} or more")

    tf = import_tensorflow()
    keras = import_keras()
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    staging = prepare_run_dir(out, cfg.overwrite)
    learn_px = load_batch(learn_paths, spec)
    stop_px = load_batch(stop_paths, spec)
    model = build_autoencoder(height, width, spec.channels)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    train_ds = _dataset(tf, learn_px, cfg.batch_size, cfg.seed, augment=cfg.augment != "none")
    val_data = (stop_px.astype(np.float32), stop_px.astype(np.float32) / 255.0) if len(stop_px) else None
    monitor = "val_loss" if val_data is not None else "loss"
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0

    t_train = time.time()
    limit = TimeLimit(cfg.time_limit)
    with GracefulStop() as stopper:
        callbacks, best = make_callbacks(keras, model, staging, monitor, cfg, stopper, save=False)
        callbacks.append(limit.callback(keras))
        limit.start()
        h = model.fit(train_ds, validation_data=val_data, epochs=epochs, callbacks=callbacks, verbose=verbose, shuffle=False)
    if best.best_weights is not None:
        model.set_weights(best.best_weights)
    history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    if best.best_epoch >= 0:
        print(f"keeping epoch {best.best_epoch + 1} of {len(history.get('loss', []))} ({monitor} {best.best:.5f})")

    t_fit = time.time()
    probe = AnomalyDetector(ReconstructionScorer(grid), 1.0, grid, cfg.false_reject)
    hold_scores = reconstruction_scores(model, load_batch(hold_paths, spec), probe)
    threshold = threshold_for(hold_scores, cfg.false_reject)
    if not threshold > 0:
        raise DatasetError("the held-out good images all score 0: the good images are identical; add real variety of good parts")
    detector = AnomalyDetector(probe.scorer, threshold, grid, cfg.false_reject)
    defect_scores = reconstruction_scores(model, load_batch([s.path for s in defects], spec), probe)
    seconds = {"train": round(t_fit - t_train, 2), "fit": round(time.time() - t_fit, 2)}
    write_json(staging / "history.json", history)
    report = finish_run(staging, out, cfg, spec, model, detector, hold_paths, hold_scores, defects, defect_scores,
                        fit_paths, seconds, t0)
    return TrainResult(out, report, history, stopper.requested, time.time() - t0)
