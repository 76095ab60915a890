"""Backbone registry and the classifier built around a backbone.

A backbone is a feature extractor that takes *normalised* images; the classifier in front of
it takes raw 0-255 RGB (or grayscale) pixels and normalises inside the graph, so the exported
model's input is plain pixels and an int8 model can be fed camera bytes directly.

Register a new backbone with ``@register_backbone(name, ...)``. Importing this module does not
import TensorFlow; builders import Keras when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from edgesight.edge.errors import ConfigError

# builder(input_shape, weights, alpha) -> keras.Model mapping normalised images to a feature map.
# How the classifier pools the last feature map (train --pooling).
POOLINGS = ("avg", "max")
Builder = Callable[[Tuple[int, int, int], Optional[str], float], "object"]


@dataclass(frozen=True)
class Backbone:
    """A registered backbone.

    Attributes:
        name: registry key, e.g. ``mobilenet_v3_small``.
        builder: returns the feature extractor for ``(input_shape, weights, alpha)``.
        mean, std: normalisation the backbone expects, ``(pixel - mean) / std``.
        default_size: input side used when ``--img-size`` is not given.
        min_size: smallest input side the architecture accepts.
        pretrained: has ImageNet weights, so training runs as transfer learning (frozen
            backbone in inference mode, then optional fine-tuning).
        rgb_only: needs 3 input channels (grayscale input is repeated to RGB in the graph).
        description: one line for ``edgesight train --help`` and error messages.
        downloads_weights: its ImageNet weights are downloaded on first use (Keras' cache),
            not read from an installed package; see :func:`needs_download`.
    """

    name: str
    builder: Builder
    mean: float
    std: float
    default_size: int
    min_size: int
    pretrained: bool
    rgb_only: bool
    description: str
    downloads_weights: bool = False

    @property
    def default_weights(self) -> str:
        return "imagenet" if self.pretrained else "none"


def has_weights(backbone: Backbone, weights: Optional[str]) -> bool:
    """True when the backbone starts from loaded weights (transfer learning), not from random."""
    return backbone.pretrained and str(weights or backbone.default_weights).lower() != "none"


def needs_download(backbone: Backbone, weights: Optional[str]) -> bool:
    """True when ``weights`` (None: the backbone's default) must come from the network the
    first time: ImageNet weights of a backbone whose weights are not in an installed package."""
    return backbone.downloads_weights and str(weights or backbone.default_weights).lower() == "imagenet"


_REGISTRY: Dict[str, Backbone] = {}


def register_backbone(
    name: str,
    *,
    mean: float,
    std: float,
    default_size: int,
    min_size: int = 32,
    pretrained: bool = True,
    rgb_only: bool = True,
    description: str = "",
    downloads_weights: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator adding a feature-extractor builder to the registry under ``name``."""

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = Backbone(name, fn, mean, std, default_size, min_size, pretrained, rgb_only,
                                   description or (fn.__doc__ or "").strip().splitlines()[0], downloads_weights)
        return fn

    return deco


def get_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(list_backbones())}") from None


def list_backbones() -> Tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _keras():
    from .tf import import_keras

    return import_keras()


@register_backbone("cnn_small", mean=0.0, std=255.0, default_size=64, min_size=8, pretrained=False, rgb_only=False)
def cnn_small(input_shape, weights, alpha):
    """Small from-scratch CNN (conv-BN-ReLU blocks), for Pi Zero and microcontroller-class targets."""
    keras = _keras()
    layers = keras.layers
    if weights not in (None, "none"):
        raise ConfigError("cnn_small trains from scratch and has no pretrained weights; use --weights none")
    widths = [max(8, int(round(w * alpha))) for w in (32, 64, 128)]
    inputs = keras.Input(input_shape)
    x = inputs
    for i, width in enumerate(widths):
        for j in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv{j + 1}")(x)
            # momentum 0.9: the moving statistics must settle within the few steps per epoch
            # that small datasets give (Keras' 0.99 leaves validation stuck at chance).
            x = layers.BatchNormalization(momentum=0.9, name=f"block{i + 1}_bn{j + 1}")(x)
            x = layers.ReLU(name=f"block{i + 1}_relu{j + 1}")(x)
        # Small inputs (8x8 digits) cannot afford a pool after every block.
        if x.shape[1] >= 4 and x.shape[2] >= 4:
            x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    return keras.Model(inputs, x, name="cnn_small")


def _applications_weights(name: str, weights: Optional[str]) -> Optional[str]:
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        return "imagenet"
    p = Path(weights).expanduser()
    if not p.is_file():
        raise ConfigError(f"{weights}: weights file not found; give a Keras .h5/.weights.h5 file, 'imagenet' or 'none'")
    return str(p)


def _load_application(name: str, fn: Callable, weights: Optional[str], **kwargs):
    w = _applications_weights(name, weights)
    try:
        return fn(include_top=False, weights=w, **kwargs)
    except ValueError as e:
        raise ConfigError(f"{name}: cannot use weights '{weights}' ({str(e).splitlines()[0]})") from e
    except Exception as e:  # network failures surface as several exception types across Keras versions
        if w == "imagenet":
            raise ConfigError(
                f"{name}: could not download ImageNet weights ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "connect to the internet once (Keras caches them in ~/.keras/models), or use --weights PATH or --weights none"
            ) from e
        raise


@register_backbone("mobilenet_v2", mean=127.5, std=127.5, default_size=224, min_size=32, downloads_weights=True)
def mobilenet_v2(input_shape, weights, alpha):
    """MobileNetV2 (keras.applications); ImageNet weights for alpha 0.35-1.4."""
    keras = _keras()
    return _load_application("mobilenet_v2", keras.applications.MobileNetV2, weights, input_shape=input_shape, alpha=alpha)


@register_backbone("mobilenet_v3_small", mean=127.5, std=127.5, default_size=224, min_size=32, downloads_weights=True)
def mobilenet_v3_small(input_shape, weights, alpha):
    """MobileNetV3-Small (keras.applications); ImageNet weights for alpha 0.75 and 1.0."""
    keras = _keras()
    return _load_application(
        "mobilenet_v3_small", keras.applications.MobileNetV3Small, weights, input_shape=input_shape, alpha=alpha, include_preprocessing=False
    )


@register_backbone("mobilenet_v3_large", mean=127.5, std=127.5, default_size=224, min_size=32, downloads_weights=True)
def mobilenet_v3_large(input_shape, weights, alpha):
    """MobileNetV3-Large (keras.applications); ImageNet weights for alpha 0.75 and 1.0."""
    keras = _keras()
    return _load_application(
        "mobilenet_v3_large", keras.applications.MobileNetV3Large, weights, input_shape=input_shape, alpha=alpha, include_preprocessing=False
    )


@register_backbone("efficientnet_lite0", mean=127.0, std=128.0, default_size=224, min_size=32)
def efficientnet_lite0(input_shape, weights, alpha):
    """EfficientNet-Lite0 (ReLU6, no squeeze-excite: quantisation-friendly); ImageNet weights offline."""
    from .efficientnet_lite import build_efficientnet_lite0, load_imagenet_weights

    if alpha != 1.0:
        raise ConfigError("efficientnet_lite0 has no width multiplier; leave --alpha at 1.0")
    model = build_efficientnet_lite0(input_shape, include_top=False)
    if weights == "imagenet":
        load_imagenet_weights(model)
    elif weights not in (None, "none"):
        p = Path(weights).expanduser()
        if not p.is_file():
            raise ConfigError(f"{weights}: weights file not found; give a Keras .weights.h5 file, 'imagenet' or 'none'")
        model.load_weights(str(p))
    return model


def build_classifier(
    backbone: Backbone,
    input_shape: Tuple[int, int, int],
    num_classes: int,
    weights: Optional[str],
    alpha: float = 1.0,
    dropout: float = 0.2,
    pooling: str = "avg",
):
    """The exported classifier: raw pixels -> normalise -> backbone -> pool -> dropout -> softmax.

    ``pooling``: global average (``avg``) or global max (``max``) pooling of the backbone's last
    feature map; either way the layer is named ``pool``.

    Returns:
        ``(model, base)`` where ``base`` is the backbone sub-model (frozen for transfer learning).

    Raises:
        ConfigError: the input is smaller than the backbone accepts, the weights are unusable, or
            the pooling is unknown.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    keras = _keras()
    layers = keras.layers
    h, w, c = input_shape
    if min(h, w) < backbone.min_size:
        raise ConfigError(f"{backbone.name} needs inputs of at least {backbone.min_size}x{backbone.min_size}, got {h}x{w}; raise --img-size")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    base_channels = c
    if c == 1 and backbone.rgb_only:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        base_channels = 3
    x = layers.Rescaling(1.0 / backbone.std, offset=-backbone.mean / backbone.std, name="normalize")(x)
    base = backbone.builder((h, w, base_channels), weights, alpha)
    if not has_weights(backbone, weights):
        # From random weights the moving statistics must settle within the few steps per epoch
        # that small datasets give; Keras applications' 0.99 (made for ImageNet) leaves
        # validation at chance for many epochs.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = min(layer.momentum, 0.9)
    # Backbones with loaded weights run in inference mode so that fine-tuning never updates
    # their batch-norm statistics with small-batch estimates; a randomly initialised one must
    # learn its statistics like any network trained from scratch.
    x = base(x, training=False) if has_weights(backbone, weights) else base(x)
    x = (layers.GlobalMaxPooling2D if pooling == "max" else layers.GlobalAveragePooling2D)(name="pool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier"), base


def set_batch_norm_statistics(model, images, batch_size: int = 32) -> int:
    """Set the moving statistics of ``model``'s trainable batch-norm layers to those of
    ``images`` (raw pixels, the model's input): the mean over whole batches of ``batch_size``
    of the statistics training would see, for the weights as they are now.

    Returns:
        The number of layers set (0 when there are none or no images).
    """
    keras = _keras()
    layers, todo = [], [model]
    while todo:
        layer = todo.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                layers.append(layer)
        else:
            todo.extend(getattr(layer, "layers", []))
    if not layers or len(images) == 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    step = max(1, min(batch_size, len(images)))
    try:
        # Momentum i/(i+1): the running mean of the batches' statistics, the first replacing
        # what the layers held.
        for i in range(len(images) // step):
            for layer in layers:
                layer.momentum = i / (i + 1)
            model(np.asarray(images[i * step:(i + 1) * step], dtype=np.float32), training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    return len(layers)
