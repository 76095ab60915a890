"""Random corruption layers of the ``robust`` augmentation preset.

They imitate what the field does to camera images (an obstruction, blur, low contrast or a
bright veil, exposure, sensor noise, JPEG) on float32 0-255 batches, in camera order, each on a
random share of the images with a random strength. Like every augmentation layer they live only
in the training graph: with ``training`` unset or False they return their input, and the
exported inference model never contains them.

Their ranges reach the strongest severities of the robustness report (:mod:`.corruptions`),
except occlusion (at most 20 % of the image, against 30 %), and are drawn continuously, mild
strengths more often (low contrast: evenly on a log scale). The rates (:data:`RATES`) leave
about 40 % of the images without any of these corruptions.

Curriculum: each layer counts the training images it has seen and scales its strongest
strengths from :data:`RAMP_START` of their range up to the whole range over the first
:data:`RAMP_IMAGES` images (seven epochs of the demo's 1,100 training images), so early epochs
learn the classes and later ones the corruptions; on the demo's model this is what brings a run
with these layers close to the clean accuracy of one without them. The count lives in the layer,
not in the optimiser, so the ramp needs no callback. (Transfer learning on cached
features augments its copies in one pass, so the images cached first get milder corruptions.)

The veil, a blend towards a bright grey, is close to the report's ``haze``; only
``low_resolution`` has no layer here, so it measures how robustness carries over to an unseen
kind. Measurements and what was tried: ``benchmarks/README.md``, "Robustness of the demo's model".
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from .tf import import_keras, import_tensorflow

tf = import_tensorflow()
keras = import_keras()

# Share of the images each layer corrupts. Blur, exposure and JPEG cost a model trained with the
# light preset little; contrast, noise and occlusion cost it most, so they get more. Low contrast
# is learnt slowly (with fewer examples the model calls strongly flat images all one class).
# 0.8 * 0.92 * 0.8 * 0.85 * 0.85 * 0.92 = 39 % of the images pass all six untouched.
RATES: Dict[str, float] = {"occlusion": 0.2, "blur": 0.08, "contrast": 0.2, "exposure": 0.15, "noise": 0.15, "jpeg": 0.08}
# Training images over which the strongest strengths grow from RAMP_START of their range to all
# of it (0: the whole range from the first image).
RAMP_IMAGES = 8000
RAMP_START = 0.0
# Share of the low-contrast images blended towards a bright grey instead of their own mean.
VEIL = 0.5


class _RandomCorruption(keras.layers.Layer):
    """Applies :meth:`corrupt` to each image with probability ``rate``.

    Args:
        rate: share of the images corrupted, 0 to 1.
        seed: seed of the layer's random draws.
        ramp_images: training images over which the strength ramps up (0: full range at once).
        ramp_start: share of the strength range in use at the first image.
    """

    def __init__(self, rate: float, seed: Optional[int] = None, ramp_images: int = 0, ramp_start: float = RAMP_START,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.ramp_images = int(ramp_images)
        self.ramp_start = float(ramp_start)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.images_seen = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="images_seen")

    def uniform(self, n, lo=0.0, hi=1.0, shape: Tuple[int, ...] = (1, 1, 1)):
        """Per-image uniform draws of shape ``(n, *shape)``."""
        return keras.random.uniform(tf.stack([n, *shape]), lo, hi, seed=self.seed_generator)

    def strength(self, n, hi, shape: Tuple[int, ...] = (1, 1, 1)):
        """Per-image strengths in [0, ``hi``], mild ones more likely (median ``0.35 hi``): the
        strongest settings still occur, but seldom pile up on one image."""
        return hi * tf.pow(self.uniform(n, shape=shape), 1.5)

    def scale(self):
        """Share of the strength range in use now (1 once the ramp is over)."""
        if self.ramp_images <= 0:
            return tf.constant(1.0)
        done = tf.minimum(tf.cast(self.images_seen, tf.float32) / float(self.ramp_images), 1.0)
        return self.ramp_start + (1.0 - self.ramp_start) * done

    def advance(self, n):
        """The current scale, then counts ``n`` more training images."""
        s = self.scale()
        if self.ramp_images > 0:
            self.images_seen.assign(tf.minimum(self.images_seen + tf.cast(n, tf.float32), float(self.ramp_images)))
        return s

    def call(self, x, training=None):
        if not training:
            return x
        x = tf.cast(x, tf.float32)
        n = tf.shape(x)[0]
        scale = self.advance(n)
        chosen = self.uniform(n) < self.rate
        return tf.clip_by_value(tf.where(chosen, self.corrupt(x, n, scale), x), 0.0, 255.0)

    def corrupt(self, x, n, scale):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "ramp_images": self.ramp_images,
                "ramp_start": self.ramp_start}


class RandomOcclusion(_RandomCorruption):
    """One rectangle of random colour, ``area`` of the image (a sticker, a branch, dirt)."""

    def __init__(self, rate: float, area: Tuple[float, float] = (0.02, 0.2), **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.area = tuple(area)

    def corrupt(self, x, n, scale):
        h, w = x.shape[1], x.shape[2]
        lo, hi = self.area
        area = (lo + (hi - lo) * scale * self.uniform(n)) * h * w
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

    def corrupt(self, x, n, scale):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        side = min(h, w)
        k = max(1, min(math.ceil(self.max_length * side / 2), (side - 1) // 2))
        size = 2 * k + 1
        grid = tf.range(-k, k + 1, dtype=tf.float32)
        u = tf.reshape(grid, (1, 1, size))
        v = tf.reshape(grid, (1, size, 1))
        theta = self.uniform(n, 0.0, math.pi, (1, 1))
        longest = max(1.0, min(2.0 * k, self.max_length * side))
        length = 1.0 + (longest - 1.0) * scale * self.uniform(n, shape=(1, 1))
        along = u * tf.cos(theta) + v * tf.sin(theta)
        across = -u * tf.sin(theta) + v * tf.cos(theta)
        line = tf.nn.relu(1.0 - tf.abs(across)) * tf.clip_by_value(length / 2 + 0.5 - tf.abs(along), 0.0, 1.0)
        widest = max(0.5, min(k - 0.5, self.max_radius * side))
        radius = 0.5 + (widest - 0.5) * scale * self.uniform(n, shape=(1, 1))
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


class RandomLowContrast(_RandomCorruption):
    """Blends the image towards a grey level, keeping a factor of it down to ``min_factor``.

    The grey is the image's own mean (flat light, a low-contrast scene) or, for a ``veil`` share
    of the images, a bright grey of 0.75 to 0.95 of white (glare on a windscreen, a dirty lens,
    haze). The factor is drawn log-uniformly, not mild-first: a model trained on light
    augmentation already reads mildly flat images, and calls nearly every strongly flat one
    the same class.
    """

    def __init__(self, rate: float, min_factor: float = 0.05, veil: float = VEIL, **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.min_factor, self.veil = float(min_factor), float(veil)

    def corrupt(self, x, n, scale):
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        bright_grey = self.uniform(n, 0.75 * 255.0, 0.95 * 255.0)
        grey = tf.where(self.uniform(n) < self.veil, bright_grey, mean)
        factor = tf.exp(math.log(self.min_factor) * scale * self.uniform(n))
        return grey + factor * (x - grey)

    def get_config(self):
        return {**super().get_config(), "min_factor": self.min_factor, "veil": self.veil}


class RandomExposure(_RandomCorruption):
    """Under-exposure (up to 5 stops, gamma 2.2) or over-exposure (up to 0.5 added to the HSV
    value, keeping hue and saturation), one of the two for every chosen image."""

    def corrupt(self, x, n, scale):
        darker = x * tf.pow(2.0, -self.strength(n, 5.0 * scale) / 2.2)
        value = tf.reduce_max(x, axis=3, keepdims=True) / 255.0
        lifted = tf.minimum(value + self.strength(n, 0.5 * scale), 1.0)
        brighter = tf.where(value > 0, x * lifted / tf.maximum(value, 1e-6), lifted * 255.0)
        return tf.where(self.uniform(n) < 0.5, darker, brighter)


class RandomNoise(_RandomCorruption):
    """Gaussian sensor noise, standard deviation 0 to ``max_sigma`` of 255 per image."""

    def __init__(self, rate: float, max_sigma: float = 0.38, **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.max_sigma = float(max_sigma)

    def corrupt(self, x, n, scale):
        sigma = self.strength(n, self.max_sigma * 255.0 * scale)
        return x + sigma * keras.random.normal(tf.shape(x), seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "max_sigma": self.max_sigma}


class RandomJpeg(_RandomCorruption):
    """Real JPEG compression (TensorFlow's codec) at a random quality in ``quality``, high
    qualities more likely."""

    def __init__(self, rate: float, quality: Tuple[int, int] = (5, 60), **kwargs) -> None:
        super().__init__(rate, **kwargs)
        self.quality = tuple(int(q) for q in quality)

    def call(self, x, training=None):
        if not training:
            return x
        x = tf.cast(x, tf.float32)
        n = tf.shape(x)[0]
        scale = self.advance(n)
        chosen = tf.reshape(self.uniform(n) < self.rate, (-1,))
        lo, hi = self.quality
        quality = tf.cast(tf.round(hi - tf.reshape(self.strength(n, (hi - lo) * scale), (-1,))), tf.int32)
        pixels = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)

        def one(args):
            img, q, yes = args
            return tf.cond(yes, lambda: tf.image.adjust_jpeg_quality(img, q), lambda: img)

        out = tf.map_fn(one, (pixels, quality, chosen), fn_output_signature=tf.TensorSpec(x.shape[1:], tf.uint8))
        return tf.where(tf.reshape(chosen, (-1, 1, 1, 1)), tf.cast(out, tf.float32), x)

    def get_config(self):
        return {**super().get_config(), "quality": list(self.quality)}


def robust_layers(seed: Optional[int] = None, ramp_images: int = RAMP_IMAGES) -> List[keras.layers.Layer]:
    """The photometric half of the ``robust`` preset, in the order a camera applies them.

    Args:
        seed: seed of the random draws (each layer gets its own, derived from it).
        ramp_images: training images over which strengths ramp up (0: full range from the start).
    """

    def kw(i: int) -> dict:
        return {"seed": None if seed is None else seed + i, "ramp_images": ramp_images}

    return [
        RandomOcclusion(RATES["occlusion"], name="aug_occlusion", **kw(1)),
        RandomBlur(RATES["blur"], name="aug_blur", **kw(2)),
        RandomLowContrast(RATES["contrast"], name="aug_contrast", **kw(3)),
        RandomExposure(RATES["exposure"], name="aug_exposure", **kw(4)),
        RandomNoise(RATES["noise"], name="aug_noise", **kw(5)),
        RandomJpeg(RATES["jpeg"], name="aug_jpeg", **kw(6)),
    ]
