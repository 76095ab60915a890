"""Quantisation-aware fine-tuning of an EfficientNet-Lite0 classifier before int8 conversion.

Post-training int8 quantisation rounds every weight and activation; each rounding is small, but
over the 16 blocks of EfficientNet-Lite0 they add up, and images near a decision boundary change
label (on 96x96 Fashion-MNIST, 4 % of labels changed and accuracy fell by about 1 point). Here the
model is fine-tuned for a few epochs at a very low learning rate through a twin of itself that
rounds as the int8 model will:

* each convolution with its batch norm folded in (as the converter folds it), its weights
  rounded per output channel to 8 bits (symmetric, as TFLite does);
* every activation rounded to 8 bits over the range it takes on the calibration images (the
  range the converter will give it);
* rounding passes the gradient straight through.

The targets are the model's own scores (it learns to give its float answers with int8 numbers),
mixed half and half with the true labels when they are known. The fine-tuned weights go back into
the original layers (each batch norm becomes the identity plus the folded bias), so the model's
structure, its embedding output and everything downstream are unchanged; the usual calibration
and conversion follow. Needs TensorFlow (the convert step's own dependency).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

BACKBONE = "efficientnet_lite0"
LEARNING_RATE = 5e-6
MAX_IMAGES = 2000
BATCH = 32
LABEL_SHARE = 0.5


def unsupported(model) -> str:
    """Why ``model`` cannot be fine-tuned here ("" when it can): only the classifiers ``edgesight
    train`` builds on EfficientNet-Lite0 (image, [gray_to_rgb], normalize, the backbone, pool,
    dropout, predictions) are."""
    from edgesight.training.tf import import_keras

    keras = import_keras()
    names = {layer.name: layer for layer in model.layers}
    if BACKBONE not in names or not isinstance(names[BACKBONE], keras.Model):
        return f"only for {BACKBONE} models"
    if isinstance(names.get("pool"), keras.layers.GlobalMaxPooling2D):
        return "only for average-pooled models (train --pooling avg)"
    for name, kind in (("normalize", keras.layers.Rescaling), ("pool", keras.layers.GlobalAveragePooling2D),
                       ("predictions", keras.layers.Dense)):
        if not isinstance(names.get(name), kind):
            return f"the model has no '{name}' layer of the kind edgesight train builds"
    inner = {layer.name for layer in names[BACKBONE].layers}
    missing = [n for n in _conv_names() if n[0] not in inner or n[1] not in inner]
    if missing:
        return f"the backbone has no layer {missing[0][0]}"
    return ""


def _blocks() -> List[Tuple[str, int, int, int, bool]]:
    """``(name, stride, channels in, channels out, expands)`` of every block, in order."""
    from edgesight.training import efficientnet_lite as E

    out = []
    names = iter(E._BLOCK_NAMES)
    channels = E.STEM_CHANNELS
    for expand, _kernel, stride, width, repeats in E.STAGES:
        for r in range(repeats):
            out.append((next(names), stride if r == 0 else 1, channels, width, expand != 1))
            channels = width
    return out


def _conv_names() -> List[Tuple[str, str, bool]]:
    """``(conv, batch norm, depthwise)`` of every convolution, in order."""
    names = [("stem_conv", "stem_bn", False)]
    for block, _s, _i, _o, expands in _blocks():
        if expands:
            names.append((f"{block}_expand_conv", f"{block}_expand_bn", False))
        names += [(f"{block}_dwconv", f"{block}_bn", True), (f"{block}_project_conv", f"{block}_project_bn", False)]
    return names + [("top_conv", "top_bn", False)]


def _folded(backbone, conv: str, bn: str, depthwise: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The convolution's kernel with the batch norm folded in, and the bias that leaves."""
    kernel = backbone.get_layer(conv).get_weights()[0]
    norm = backbone.get_layer(bn)
    gamma, beta, mean, var = norm.get_weights()
    a = gamma / np.sqrt(var + norm.epsilon)
    kernel = kernel * (a[None, None, :, None] if depthwise else a[None, None, None, :])
    return kernel.astype(np.float32), (beta - mean * a).astype(np.float32)


def _ranges(model, images: np.ndarray) -> Dict[str, Tuple[float, float]]:
    """Min and max (0 included) of every quantised activation over ``images``, as the converter's
    calibration measures them."""
    from edgesight.training.tf import import_keras

    keras = import_keras()
    backbone = model.get_layer(BACKBONE)
    inner = [layer.name for layer in backbone.layers
             if isinstance(layer, (keras.layers.ReLU, keras.layers.Add)) or layer.name.endswith("_project_bn")]
    normalised = keras.Model(model.inputs, model.get_layer("normalize").output)
    taps = keras.Model(backbone.inputs, [backbone.get_layer(n).output for n in inner] + [backbone.outputs[0]])
    kernel, bias = model.get_layer("predictions").get_weights()
    lo: Dict[str, float] = {}
    hi: Dict[str, float] = {}

    def see(name: str, value: np.ndarray) -> None:
        lo[name] = min(lo.get(name, 0.0), float(value.min()))
        hi[name] = max(hi.get(name, 0.0), float(value.max()))

    for i in range(0, len(images), 50):
        x = normalised.predict(images[i:i + 50], verbose=0)
        see("normalize", x)
        *outs, top = taps.predict(x, verbose=0)
        for name, value in zip(inner, outs):
            see(name, value)
        pooled = top.mean(axis=(1, 2))
        see("pool", pooled)
        see("logits", pooled @ kernel + bias)
    return {name: (lo[name], hi[name]) for name in lo}


def _twin(model, ranges: Dict[str, Tuple[float, float]]):
    """The model rebuilt with folded batch norms and 8-bit rounding of weights and activations."""
    import tensorflow as tf

    from edgesight.training.tf import import_keras

    keras = import_keras()
    layers = keras.layers
    backbone = model.get_layer(BACKBONE)

    class Round(layers.Layer):
        """8-bit rounding of an activation over a fixed range (zero exactly representable)."""

        def __init__(self, lo: float, hi: float, **kw: Any) -> None:
            super().__init__(**kw)
            self.lo, self.hi = lo, hi

        def call(self, x):
            return tf.quantization.fake_quant_with_min_max_args(x, min=self.lo, max=self.hi, num_bits=8)

    class Conv(layers.Layer):
        """A convolution plus bias whose weights are rounded per output channel."""

        def __init__(self, kernel: np.ndarray, bias: np.ndarray, strides: int, depthwise: bool, **kw: Any) -> None:
            super().__init__(**kw)
            self.k0, self.b0, self.strides, self.depthwise = kernel, bias, strides, depthwise

        def build(self, shape) -> None:
            self.kernel = self.add_weight(shape=self.k0.shape, initializer=keras.initializers.Constant(self.k0), name="kernel")
            self.bias = self.add_weight(shape=self.b0.shape, initializer=keras.initializers.Constant(self.b0), name="bias")

        def call(self, x):
            k = tf.transpose(self.kernel, [0, 1, 3, 2]) if self.depthwise else self.kernel
            m = tf.reduce_max(tf.abs(k), axis=[0, 1, 2])
            k = tf.quantization.fake_quant_with_min_max_vars_per_channel(k, -m, m, num_bits=8, narrow_range=True)
            if self.depthwise:
                y = tf.nn.depthwise_conv2d(x, tf.transpose(k, [0, 1, 3, 2]), [1, self.strides, self.strides, 1], "SAME")
            else:
                y = tf.nn.conv2d(x, k, self.strides, "SAME")
            return y + self.bias

    class Dense(layers.Layer):
        """The classifier with its weights rounded per tensor."""

        def __init__(self, kernel: np.ndarray, bias: np.ndarray, **kw: Any) -> None:
            super().__init__(**kw)
            self.k0, self.b0 = kernel, bias

        def build(self, shape) -> None:
            self.kernel = self.add_weight(shape=self.k0.shape, initializer=keras.initializers.Constant(self.k0), name="kernel")
            self.bias = self.add_weight(shape=self.b0.shape, initializer=keras.initializers.Constant(self.b0), name="bias")

        def call(self, x):
            m = tf.reduce_max(tf.abs(self.kernel))
            k = tf.quantization.fake_quant_with_min_max_vars(self.kernel, -m, m, num_bits=8, narrow_range=True)
            return tf.matmul(x, k) + self.bias

    def rounded(x, name: str):
        return Round(*ranges[name])(x)

    def conv(x, conv_name: str, bn: str, strides: int, depthwise: bool, relu: bool, tap: str):
        kernel, bias = _folded(backbone, conv_name, bn, depthwise)
        x = Conv(kernel, bias, strides, depthwise, name=f"q_{conv_name}")(x)
        if relu:
            x = layers.ReLU(6.0)(x)
        return rounded(x, tap)

    inp = keras.Input(tuple(model.inputs[0].shape[1:]), name="image")
    x = inp
    if "gray_to_rgb" in {layer.name for layer in model.layers}:
        x = layers.Concatenate()([x, x, x])
    norm = model.get_layer("normalize")
    x = rounded(layers.Rescaling(norm.scale, offset=norm.offset)(x), "normalize")
    x = conv(x, "stem_conv", "stem_bn", 2, False, True, "stem_activation")
    for block, stride, c_in, c_out, expands in _blocks():
        skip = x
        if expands:
            x = conv(x, f"{block}_expand_conv", f"{block}_expand_bn", 1, False, True, f"{block}_expand_activation")
        x = conv(x, f"{block}_dwconv", f"{block}_bn", stride, True, True, f"{block}_activation")
        x = conv(x, f"{block}_project_conv", f"{block}_project_bn", 1, False, False, f"{block}_project_bn")
        if stride == 1 and c_in == c_out:
            x = rounded(layers.Add()([x, skip]), f"{block}_add")
    x = conv(x, "top_conv", "top_bn", 1, False, True, "top_activation")
    x = rounded(layers.GlobalAveragePooling2D()(x), "pool")
    x = rounded(Dense(*model.get_layer("predictions").get_weights(), name="q_predictions")(x), "logits")
    return keras.Model(inp, layers.Softmax()(x), name="quantisation_twin")


def _write_back(model, twin) -> None:
    """The twin's weights into the original layers: each kernel folded, each batch norm the
    identity plus the folded bias."""
    backbone = model.get_layer(BACKBONE)
    for conv, bn, _depthwise in _conv_names():
        kernel, bias = twin.get_layer(f"q_{conv}").get_weights()
        backbone.get_layer(conv).set_weights([kernel])
        norm = backbone.get_layer(bn)
        n = bias.shape[0]
        norm.set_weights([np.ones(n, np.float32), bias, np.zeros(n, np.float32), np.full(n, 1.0 - norm.epsilon, np.float32)])
    model.get_layer("predictions").set_weights(twin.get_layer("q_predictions").get_weights())


def finetune_for_int8(
    model,
    images: np.ndarray,
    labels: Optional[np.ndarray],
    calibration: np.ndarray,
    epochs: int,
    seed: int = 0,
    on_batch: Optional[Callable[[], None]] = None,
) -> Dict[str, Any]:
    """Fine-tune ``model`` in place through its 8-bit twin.

    Args:
        model: a classifier :func:`unsupported` accepts (its weights change).
        images: uint8 ``NxHxWxC`` training images, preprocessed as in training.
        labels: their class indices, or None (the targets are then the model's own scores).
        calibration: the images the converter calibrates on (they set the activation ranges).
        epochs: passes over ``images``.
        seed: shuffling seed.
        on_batch: called after each batch.

    Returns:
        What was done: epochs, images, whether labels were used, learning rate, loss per epoch,
        seconds.
    """
    import tensorflow as tf

    from edgesight.training.pipeline import inference_batch
    from edgesight.training.tf import import_keras

    keras = import_keras()
    t0 = time.time()
    teacher = model.predict(images, batch_size=inference_batch(images.shape[1], images.shape[2]), verbose=0)
    targets = teacher if labels is None else (1 - LABEL_SHARE) * teacher + LABEL_SHARE * np.eye(teacher.shape[1], dtype=np.float32)[labels]
    twin = _twin(model, _ranges(model, calibration))
    twin.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=keras.losses.KLDivergence())

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None) -> None:
            if on_batch:
                on_batch()

    tf.random.set_seed(seed)
    history = twin.fit(images.astype(np.float32), targets.astype(np.float32), batch_size=batch_size(*images.shape[1:3]), epochs=epochs,
                       shuffle=True, verbose=0, callbacks=[Tick()])
    _write_back(model, twin)
    return {
        "epochs": epochs,
        "images": int(len(images)),
        "labels": labels is not None,
        "learning_rate": LEARNING_RATE,
        "loss": [round(float(v), 5) for v in history.history["loss"]],
        "seconds": round(time.time() - t0, 1),
    }


def batch_size(height: int, width: int) -> int:
    """:data:`BATCH`, fewer for inputs larger than 224x224 (memory grows with the pixels)."""
    from edgesight.training.pipeline import inference_batch

    return inference_batch(height, width, BATCH)


def batches(n_images: int, epochs: int, height: int, width: int) -> int:
    """Batches :func:`finetune_for_int8` runs on ``height x width`` images (for a progress bar)."""
    return epochs * -(-n_images // batch_size(height, width))
