"""tf.data input pipeline: parallel decode and resize (the runtime's own code), cache, shuffle,
batch, prefetch."""

from __future__ import annotations

import functools
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgesight.edge.model.preprocess import load_for_model
from edgesight.edge.model.spec import PreprocessSpec


DECODE_CHUNK = 32


@functools.lru_cache(maxsize=1)
def _decode_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="edgesight-decode")


def _tf():
    from .tf import import_tensorflow

    return import_tensorflow()


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    spec: PreprocessSpec,
    num_classes: int,
    batch_size: int,
    *,
    training: bool = False,
    seed: int = 42,
    cache: str = "memory",
    cache_dir: Optional[Path] = None,
    one_hot: bool = True,
):
    """Batches of ``(float32 pixels 0-255, one-hot labels)``.

    Images are decoded and resized by :func:`~edgesight.edge.model.preprocess.load_for_model` (OpenCV), the
    same function the device runtime uses, so training sees exactly what the camera loop feeds.
    Decoding runs in parallel; decoded uint8 images are cached (memory or disk) so that later
    epochs skip the decode; training batches are reshuffled every epoch.

    Args:
        paths, labels: image files and their class indices.
        spec: the model's preprocessing spec (size, colour, resize policy).
        num_classes: for one-hot labels.
        batch_size: images per batch.
        training: shuffle (seeded) and drop nothing; evaluation keeps the given order.
        seed: shuffle seed.
        cache: ``memory``, ``disk`` (a file under ``cache_dir``) or ``none``.
        cache_dir: where the disk cache goes.
        one_hot: one-hot labels (for label smoothing) rather than class indices.
    """
    tf = _tf()
    paths, labels = list(paths), list(labels)
    if training:
        # Mix classes once before caching; the shuffle buffer then reshuffles every epoch.
        order = list(range(len(paths)))
        random.Random(seed).shuffle(order)
        paths = [paths[i] for i in order]
        labels = [labels[i] for i in order]
    h, w, c = spec.height, spec.width, spec.channels

    def _load_chunk(chunk):
        # One call per chunk of paths: tf.numpy_function's per-call cost is paid once per chunk,
        # and OpenCV releases the GIL while decoding, so the pool's threads decode in parallel.
        return np.stack(list(_decode_pool().map(lambda p: load_for_model(Path(p.decode("utf-8")), spec), chunk)))

    def load(chunk, label):
        img = tf.numpy_function(_load_chunk, [chunk], tf.uint8, stateful=False)
        img.set_shape((None, h, w, c))
        return img, label

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, dtype=tf.string), tf.constant(labels, dtype=tf.int32)))
    ds = ds.batch(DECODE_CHUNK).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    # unbatch() hides the length: Keras then runs the first epoch until the data ends and warns
    # "Your input ran out of data; interrupting training". Every path yields one image.
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(paths)))
    if cache == "memory":
        ds = ds.cache()
    elif cache == "disk":
        cache_dir = Path(cache_dir or ".")
        cache_dir.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache_dir / f"cache-{'train' if training else 'eval'}-{h}x{w}x{c}"))
    if training:
        ds = ds.shuffle(min(len(paths), 10000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_model(img, label):
        y = tf.one_hot(label, num_classes) if one_hot else label
        return tf.cast(img, tf.float32), y

    ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# A float32 forward pass holds about 0.08 GB per 224x224 image in EfficientNet-Lite0 (more for
# wider backbones), and it grows with the pixels: 64 images at 448x448 take over 20 GB.
BATCH_PIXELS = 32 * 224 * 224


def inference_batch(height: int, width: int, wanted: int = 64) -> int:
    """``wanted``, or fewer so that one inference batch holds at most :data:`BATCH_PIXELS`
    pixels (at least one image): 64 at 224x224 gives 32, at 448x448 8, at 96x96 64."""
    return max(1, min(int(wanted), BATCH_PIXELS // max(1, int(height) * int(width))))


def load_batch(paths: Sequence[str], spec: PreprocessSpec) -> np.ndarray:
    """Decode a list of images into one uint8 ``NxHxWxC`` array (no TensorFlow)."""
    return np.stack([load_for_model(Path(p), spec) for p in paths]) if paths else np.zeros((0, spec.height, spec.width, spec.channels), np.uint8)
