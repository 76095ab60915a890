"""Phase 1 of transfer learning on cached backbone features.

With the backbone frozen, every epoch of phase 1 would run the same images through the same
backbone only to train the classifier head on top of it. Here the pooled features of each
training image are computed once, for the image itself and for ``copies - 1`` augmented
versions of it (the run's own augmentation layers), and the head, the classifier's own
dropout and softmax layers, trains on them for as many epochs as it needs at a small fraction
of the cost. The validation images' features are computed once too, so early stopping and
the best-epoch choice see the same loss a full model would report.

The clean features double as the linear probe's (see :mod:`.probe`), so the probe costs no
second pass over the data.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgesight.edge.model.spec import PreprocessSpec

from .data import Sample

CHUNK = 64


def feature_model(core: Any):
    """The classifier up to its pooled features (the input of dropout and the softmax layer)."""
    from .tf import import_keras

    keras = import_keras()
    return keras.Model(core.input, core.get_layer("pool").output, name="features")


def extract(features: Any, samples: Sequence[Sample], spec: PreprocessSpec, augment: Any = None, copies: int = 1,
            progress: bool = True, desc: str = "features") -> np.ndarray:
    """Pooled features of ``samples``: ``copies x N x D`` float16, copy 0 of the images as
    they are and the others through ``augment`` (a Keras layer called in training mode).

    Each chunk of images is decoded once for all its copies.
    """
    from tqdm import tqdm

    from .pipeline import inference_batch, load_batch

    copies = max(1, copies if augment is not None else 1)
    step = inference_batch(spec.height, spec.width, CHUNK)
    out: List[List[np.ndarray]] = [[] for _ in range(copies)]
    with tqdm(total=len(samples) * copies, desc=desc, unit="img", disable=None if progress else True, leave=False,
              file=sys.stderr) as bar:
        for start in range(0, len(samples), CHUNK):
            batch = load_batch([s.path for s in samples[start:start + CHUNK]], spec).astype(np.float32)
            for k in range(copies):
                x = batch if k == 0 else np.asarray(augment(batch, training=True))
                for i in range(0, len(x), step):
                    out[k].append(np.asarray(features(x[i:i + step], training=False), np.float16))
                bar.update(len(batch))
    if not samples:
        return np.zeros((copies, 0, int(features.output.shape[-1])), np.float16)
    return np.stack([np.concatenate(o) for o in out])


def fit_head(core: Any, train_x: np.ndarray, train_y: Sequence[int], val_x: Optional[np.ndarray], val_y: Sequence[int],
             cfg: Any, num_classes: int, callbacks: List[Any], class_weight: Optional[Dict[int, float]], verbose: int) -> Dict[str, List[float]]:
    """Train ``core``'s dropout + softmax head on cached features; returns the Keras history.

    ``train_x`` is ``copies x N x D``: every copy of an image carries its label. The head's
    weights end in ``core`` (the callbacks decide which epoch's: see the best-checkpoint
    callback of :mod:`.train`).
    """
    from .tf import import_keras

    keras = import_keras()
    copies, n, dim = train_x.shape
    x = train_x.reshape(copies * n, dim)
    y = np.tile(np.eye(num_classes, dtype=np.float32)[np.asarray(train_y, np.int64)], (copies, 1))
    dense = core.get_layer("predictions")
    inputs = keras.Input((dim,), name="features")
    h = keras.layers.Dropout(cfg.dropout, name="dropout")(inputs) if cfg.dropout > 0 else inputs
    head_dense = keras.layers.Dense(num_classes, activation="softmax", name="predictions")
    head = keras.Model(inputs, head_dense(h), name="head")
    head_dense.set_weights(dense.get_weights())
    head.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                 loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing), metrics=["accuracy"])

    class Mirror(keras.callbacks.Callback):
        """Copies the head's weights into the full classifier at the end of every epoch, so
        that callbacks which save or keep ``core`` see the epoch just trained."""

        def on_epoch_end(self, epoch, logs=None):
            dense.set_weights(head_dense.get_weights())

    val = None
    if val_x is not None and len(val_y):
        val = (val_x[0].astype(np.float32), np.eye(num_classes, dtype=np.float32)[np.asarray(val_y, np.int64)])
    # The per-epoch work is tiny: batches as large as the configured ones times the copies
    # keep the number of steps per epoch (and so the schedule) that of one pass over the images.
    batch = cfg.batch_size * copies if copies > 1 else cfg.batch_size
    history = head.fit(x.astype(np.float32), y, validation_data=val, epochs=cfg.epochs, batch_size=batch, shuffle=True,
                       class_weight=class_weight, callbacks=[Mirror(), *callbacks], verbose=verbose)
    return dict(history.history)
