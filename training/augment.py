"""Augmentation presets, as Keras preprocessing layers used only in the training graph."""

from __future__ import annotations

from typing import Dict, Optional

from edgesight.edge.errors import ConfigError

# rotation is a fraction of a full turn; zoom and translation fractions of the image size;
# brightness and contrast fractions of the 0-255 range.
PRESETS: Dict[str, Optional[Dict[str, float]]] = {
    "none": None,
    "light": {"rotation": 0.02, "zoom": 0.05, "translation": 0.05, "brightness": 0.05, "contrast": 0.05},
    "standard": {"rotation": 0.05, "zoom": 0.1, "translation": 0.1, "brightness": 0.1, "contrast": 0.15},
    "strong": {"rotation": 0.1, "zoom": 0.2, "translation": 0.15, "brightness": 0.2, "contrast": 0.3},
    # Light geometry with tilts up to 14 degrees, then the camera corruptions of
    # robust_augment.py in place of brightness and contrast: occlusion, blur, low contrast or a
    # bright veil, exposure, noise, JPEG, their strengths ramping up over the first epochs. It
    # needs more epochs than the others (the demo's model: 30 against 14).
    "robust": {"rotation": 0.04, "zoom": 0.05, "translation": 0.05},
}


def build_augmentation(preset: str, hflip: bool = True, seed: Optional[int] = None):
    """A ``keras.Sequential`` of random layers for ``preset``, or None for ``none``.

    Args:
        preset: ``none``, ``light``, ``standard``, ``strong`` or ``robust`` (field
            corruptions: occlusion, blur, low contrast and veil, exposure, noise, JPEG).
        hflip: add random horizontal flips (turn off for traffic signs and text, where a
            mirrored image is a different class).
        seed: seed for the random layers.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset '{preset}'; use one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if p is None:
        return None
    from .tf import import_keras

    keras = import_keras()

    L = keras.layers
    stack = []
    if hflip:
        stack.append(L.RandomFlip("horizontal", seed=seed, name="aug_flip"))
    stack += [
        L.RandomRotation(p["rotation"], fill_mode="reflect", seed=seed, name="aug_rotation"),
        L.RandomZoom(p["zoom"], fill_mode="reflect", seed=seed, name="aug_zoom"),
        L.RandomTranslation(p["translation"], p["translation"], fill_mode="reflect", seed=seed, name="aug_translation"),
    ]
    if preset == "robust":
        from .robust_augment import robust_layers

        stack += robust_layers(seed)
    else:
        stack += [
            L.RandomBrightness(p["brightness"], value_range=(0, 255), seed=seed, name="aug_brightness"),
            L.RandomContrast(p["contrast"], value_range=(0, 255), seed=seed, name="aug_contrast"),
        ]
    return keras.Sequential(stack, name=f"augment_{preset}")
