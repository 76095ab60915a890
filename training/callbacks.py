"""Training callbacks: the best-epoch checkpoint, the batch-norm statistics of a network trained
from scratch, the time limit and the graceful stop
(Ctrl-C or SIGTERM ends the epoch and keeps the best model)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgesight.edge.fsutil import atomic_path

from .config import TrainConfig


def make_callbacks(keras, core_model, staging: Path, monitor: str, cfg: TrainConfig, stopper: "GracefulStop",
                   reduce_lr: bool = True, save: bool = True):
    """The best-epoch checkpoint (weights of ``core_model`` kept in memory and, with ``save``,
    written to ``staging/model.keras``), the graceful stop, early stopping and, with
    ``reduce_lr``, halving the learning rate on a plateau (not with a schedule)."""

    class BestCheckpoint(keras.callbacks.Callback):
        """Keeps the best weights in memory and the best inference model on disk."""

        def __init__(self) -> None:
            super().__init__()
            self.best = np.inf
            self.best_weights = None
            self.best_epoch = -1

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or not np.isfinite(value) or value >= self.best:
                return
            self.best, self.best_epoch = float(value), epoch
            self.best_weights = core_model.get_weights()
            if save:
                save_model(core_model, staging)

    class LearningRate(keras.callbacks.Callback):
        """Records the learning rate the epoch ended with (a schedule's value too)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and "learning_rate" not in logs:
                logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))

    best = BestCheckpoint()
    cbs = [best, stopper.callback(keras)]
    if reduce_lr:
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, cfg.reduce_lr_patience), min_lr=1e-7, verbose=1))
    cbs.append(LearningRate())
    if cfg.early_stopping > 0:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.early_stopping, restore_best_weights=False, verbose=1))
    return cbs, best


def batch_norm_statistics(keras, core_model: Any, images: np.ndarray, batch_size: int):
    """Sets the batch-norm statistics of ``core_model`` (trained from random weights) from
    ``images``, a sample of the training images, when training starts and before every
    validation (at the end of an epoch without one), so that validation, which early stopping
    and the best-epoch checkpoint watch, and the saved model use the statistics of the weights
    as they are.

    Keras starts the moving statistics at mean 0 and variance 1 and moves them 10 % of the way
    to each batch's (momentum 0.9). The first layer of a randomly initialised network sees
    pixels scaled to 0-1 whose neighbours vary together, and its outputs vary about 130 times
    less than 1 (cnn_small: variance 0.0075). On 200 images (6 steps an epoch) inference
    shrinks them to a ninth of their spread after the first epoch and to 0.4 after the fifth;
    the network answers one class for every image, validation stays at chance and early
    stopping ends the run there. Later the moving statistics trail the weights, which change
    quickly while a small dataset is learnt.
    """
    from .backbones import set_batch_norm_statistics

    class BatchNormStatistics(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.current = False

        def _set(self) -> None:
            set_batch_norm_statistics(core_model, images, batch_size)
            self.current = True

        def on_train_begin(self, logs=None):
            self._set()

        def on_epoch_begin(self, epoch, logs=None):
            self.current = False

        def on_test_begin(self, logs=None):
            self._set()

        def on_epoch_end(self, epoch, logs=None):
            if not self.current:
                self._set()

    return BatchNormStatistics()


def save_model(core_model: Any, staging: Path) -> None:
    """Write ``core_model`` to ``staging/model.keras`` atomically."""
    with atomic_path(staging / "model.keras") as tmp:
        keras_tmp = tmp.with_suffix(".keras")
        core_model.save(keras_tmp)
        os.replace(keras_tmp, tmp)


class TimeLimit:
    """Stops training before an epoch that would end more than ``seconds`` after the first
    epoch began (``--time-limit``); covers both phases of transfer learning.

    The next epoch is expected to last as long as the mean of those before it, the first
    (which fills the cache) left out once there are others.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.reached = False
        self._start: Optional[float] = None
        self._ends: List[float] = []

    def start(self) -> None:
        """Start the clock now (before work that precedes the first epoch, such as caching
        features), unless it runs already."""
        if self._start is None:
            self._start = time.monotonic()

    def callback(self, keras):
        outer = self

        class _Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if outer._start is None:
                    outer._start = time.monotonic()
                if outer.reached:
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                if outer.seconds <= 0:
                    return
                now = time.monotonic()
                outer._ends.append(now)
                marks = [outer._start] + outer._ends
                durations = [b - a for a, b in zip(marks, marks[1:])]
                expected = sum(durations[1:]) / (len(durations) - 1) if len(durations) > 1 else durations[0]
                used = now - outer._start
                if used + expected > outer.seconds:
                    outer.reached = True
                    self.model.stop_training = True
                    print(f"stopping: another epoch (about {expected:.0f} s) would end past the time limit of "
                          f"{outer.seconds:.0f} s ({used:.0f} s used); the best epoch is kept", flush=True)

        return _Cb()


class GracefulStop:
    """First Ctrl-C (or SIGTERM) stops training after the current batch; the second aborts.

    With ``at_epoch_end`` (several workers, which must run the same steps) the stop waits for
    the end of the epoch, where the workers agree on it.
    """

    def __init__(self, at_epoch_end: bool = False) -> None:
        self.requested = False
        self.at_epoch_end = at_epoch_end
        self._model = None
        self._old: Dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nstopping after this {'epoch' if self.at_epoch_end else 'batch'}; the best model so far is kept (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)
        if self._model is not None and not self.at_epoch_end:
            self._model.stop_training = True

    def callback(self, keras):
        outer = self

        class _Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer._model = self.model
                if outer.requested and not outer.at_epoch_end:
                    self.model.stop_training = True

        return _Cb()

    def __enter__(self) -> "GracefulStop":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave the default handlers alone
            self._old.clear()
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
