"""Random corruption layers of the ``robust`` augmentation preset.

They imitate what the field does to camera images (an obstruction, blur, exposure and contrast,
sensor noise, JPEG) on float32 0-255 batches, in camera order, each on a random share of the
images with a random strength. Like every augmentation layer they live only in the training
graph: with ``training`` unset or False they return their input, and the exported inference
model never contains them. Their ranges reach the strongest severities of the robustness
report (:mod:`.corruptions`), except occlusion (at most 20 % of the image, against 30 %), and are
drawn continuously, mild strengths more often; the report's haze and low-resolution corruptions
have no layer here, so they measure how robustness carries over to unseen kinds.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

from .tf import import_keras, import_tensorflow

tf = import_tensorflow()
keras = import_keras()


class _RandomCorruption(keras.layers.Layer):
    """Applies :meth:`corrupt` to each image with probability ``rate``."""

    def __init__(self, rate: float, seed: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def uniform(self, n, lo: float = 0.0, hi: float = 1.0, shape: Tuple[int, ...] = (1, 1, 1)):
        """Per-image uniform draws of shape ``(n, *shape)``."""
        return keras.random.uniform(tf.stack([n, *shape]), lo, hi, seed=self.seed_generator)

    def strength(self, n, hi: float, shape: Tuple[int, ...] = (1, 1, 1)):
        """Per-image strengths in [0, ``hi``], mild ones more likely (median ``0.35 hi``): the
        strongest settings still occur, but seldom pile up on one image."""
        return hi * tf.pow(self.uniform(n, shape=shape), 1.5)

    def call(self, x, training=None):
        if not training:
            return x
        x = tf.cast(x, tf.float32)
        n = tf.shape(x)[0]
        chosen = self.uniform(n) < self.rate
        return tf.clip_by_value(tf.where(chosen, self.corrupt(x, n), x), 0.0, 255.0)

    def corrupt(self, x, n):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class RandomOcclusion(_RandomCorruption):
    """One rectangle of random colour, ``area`` of the image (a sticker, a branch, dirt)."""

    def __init__(self, rate: float, area: Tuple[float, float] = (0.02, 0.2), **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.area = tuple(area)

    def corrupt(self, x, n):
        h, w = x.shape[1], x.shape[2]
        area = self.uniform(n, *self.area) * h * w
        aspect = tf.exp(self.uniform(n, math.log(0.5), math.log(2.0)))
        bh = tf.minimum(float(h), tf.sqrt(area * aspect))
        bw = tf.minimum(float(w), area / bh)
        y0 = self.uniform(n) * (h - bh)
        x0 = self.uniform(n) * (w - bw)
        ys = tf.reshape(tf.range(h, dtype=tf.float32), (1, h, 1, 1))
        xs = tf.reshape(tf.range(w, dtype=tf.float32), (1, 1, w, 1))
        inside = (ys >= y0) & (ys < y0 + bh) & (xs >= x0) & (xs < x0 + bw)
        fill = self.uniform(n, 0.0, 255.0, (1, 1, x.shape[3]))
        return tf.where(inside, fill, x)

    def get_config(self):
        return {**super().get_config(), "area": list(self.area)}


class RandomBlur(_RandomCorruption):
    """Motion blur (a line) or defocus (a disk), a kernel of its own for every image.

    ``max_length`` and ``max_radius`` are fractions of the shorter image side.
    """

    def __init__(self, rate: float, max_length: float = 0.16, max_radius: float = 0.05, **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.max_length, self.max_radius = float(max_length), float(max_radius)

    def corrupt(self, x, n):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        side = min(h, w)
        k = max(1, min(math.ceil(self.max_length * side / 2), (side - 1) // 2))
        size = 2 * k + 1
        grid = tf.range(-k, k + 1, dtype=tf.float32)
        u = tf.reshape(grid, (1, 1, size))
        v = tf.reshape(grid, (1, size, 1))
        theta = self.uniform(n, 0.0, math.pi, (1, 1))
        length = self.uniform(n, 1.0, max(1.0, min(2.0 * k, self.max_length * side)), (1, 1))
        along = u * tf.cos(theta) + v * tf.sin(theta)
        across = -u * tf.sin(theta) + v * tf.cos(theta)
        line = tf.nn.relu(1.0 - tf.abs(across)) * tf.clip_by_value(length / 2 + 0.5 - tf.abs(along), 0.0, 1.0)
        radius = self.uniform(n, 0.5, max(0.5, min(k - 0.5, self.max_radius * side)), (1, 1))
        disk = tf.clip_by_value(radius + 0.5 - tf.sqrt(u * u + v * v), 0.0, 1.0)
        kernel = tf.where(self.uniform(n, shape=(1, 1)) < 0.5, line, disk)
        kernel = kernel / tf.reduce_sum(kernel, axis=(1, 2), keepdims=True)
        # One depthwise convolution for the whole batch: the images become channels, each with
        # its own kernel (image i, channel j is channel i * c + j).
        padded = tf.pad(x, [[0, 0], [k, k], [k, k], [0, 0]], mode="REFLECT")
        stacked = tf.reshape(tf.transpose(padded, (1, 2, 0, 3)), (1, h + 2 * k, w + 2 * k, n * c))
        filters = tf.reshape(tf.repeat(tf.transpose(kernel, (1, 2, 0)), c, axis=2), (size, size, n * c, 1))
        out = tf.nn.depthwise_conv2d(stacked, filters, strides=(1, 1, 1, 1), padding="VALID")
        return tf.transpose(tf.reshape(out, (h, w, n, c)), (2, 0, 1, 3))

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "max_radius": self.max_radius}


class RandomExposure(_RandomCorruption):
    """One of contrast loss, under-exposure or over-exposure for every chosen image.

    Contrast scales around the image mean by down to 0.05; under-exposure cuts up to 5 stops
    (gamma 2.2); over-exposure adds up to 0.5 to the HSV value, keeping hue and saturation.
    """

    def corrupt(self, x, n):
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        flat = mean + tf.exp(-self.strength(n, -math.log(0.05))) * (x - mean)
        darker = x * tf.pow(2.0, -self.strength(n, 5.0) / 2.2)
        value = tf.reduce_max(x, axis=3, keepdims=True) / 255.0
        lifted = tf.minimum(value + self.strength(n, 0.5), 1.0)
        brighter = tf.where(value > 0, x * lifted / tf.maximum(value, 1e-6), lifted * 255.0)
        mode = self.uniform(n, 0.0, 3.0)
        return tf.where(mode < 1.0, flat, tf.where(mode < 2.0, darker, brighter))


class RandomNoise(_RandomCorruption):
    """Gaussian sensor noise, standard deviation 0 to ``max_sigma`` of 255 per image."""

    def __init__(self, rate: float, max_sigma: float = 0.38, **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.max_sigma = float(max_sigma)

    def corrupt(self, x, n):
        sigma = self.strength(n, self.max_sigma * 255.0)
        return x + sigma * keras.random.normal(tf.shape(x), seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "max_sigma": self.max_sigma}


class RandomJpeg(_RandomCorruption):
    """Real JPEG compression (TensorFlow's codec) at a random quality in ``quality``."""

    def __init__(self, rate: float, quality: Tuple[int, int] = (5, 60), **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.quality = tuple(int(q) for q in quality)

    def call(self, x, training=None):
        if not training:
            return x
        x = tf.cast(x, tf.float32)
        n = tf.shape(x)[0]
        chosen = tf.reshape(self.uniform(n) < self.rate, (-1,))
        quality = tf.cast(tf.reshape(self.uniform(n, self.quality[0], self.quality[1] + 1), (-1,)), tf.int32)
        pixels = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)

        def one(args):
            img, q, yes = args
            return tf.cond(yes, lambda: tf.image.adjust_jpeg_quality(img, q), lambda: img)

        out = tf.map_fn(one, (pixels, quality, chosen), fn_output_signature=tf.TensorSpec(x.shape[1:], tf.uint8))
        return tf.where(tf.reshape(chosen, (-1, 1, 1, 1)), tf.cast(out, tf.float32), x)

    def get_config(self):
        return {**super().get_config(), "quality": list(self.quality)}


def robust_layers(seed: Optional[int] = None) -> List[keras.layers.Layer]:
    """The photometric half of the ``robust`` preset, in the order a camera applies them."""

    def s(i: int) -> Optional[int]:
        return None if seed is None else seed + i

    return [
        RandomOcclusion(0.15, seed=s(1), name="aug_occlusion"),
        RandomBlur(0.25, seed=s(2), name="aug_blur"),
        RandomExposure(0.35, seed=s(3), name="aug_exposure"),
        RandomNoise(0.2, seed=s(4), name="aug_noise"),
        RandomJpeg(0.2, seed=s(5), name="aug_jpeg"),
    ]
