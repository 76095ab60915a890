"""The robustness report's corruptions: plain NumPy/OpenCV functions on uint8 images."""

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.corruptions import (
    CORRUPTIONS, SEVERITIES, add_value, corrupt, corrupt_batch, disk_kernel, motion_kernel, select,
)

# The corruptions whose result depends on the generator (direction, position, noise, fog).
RANDOM = {"gaussian_noise", "motion_blur", "haze", "rotation", "occlusion"}


def scenes(n: int = 12, h: int = 48, w: int = 48, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Textured test images: a coloured background, a filled disc, a frame and text."""
    rng = np.random.default_rng(seed)
    size, (h, w) = (h, w), (max(h, 48), max(w, 48))
    out = []
    for _ in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.integers(40, 200, 3)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))), int(rng.integers(5, 12)), colour, -1)
        cv2.rectangle(img, (4, 4), (int(rng.integers(w // 3, w - 3)), int(rng.integers(h // 3, h - 3))), (250, 250, 250), 2)
        cv2.putText(img, "A7", (6, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (10, 10, 10), 1)
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(img if channels == 3 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None])
    return np.stack(out)


def distortion(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_the_report_covers_the_field_corruptions_at_five_severities():
    assert set(CORRUPTIONS) == {"gaussian_noise", "motion_blur", "defocus_blur", "dark", "bright", "contrast", "jpeg",
                                "haze", "rotation", "occlusion", "low_resolution"}
    assert SEVERITIES == (1, 2, 3, 4, 5)
    for c in CORRUPTIONS.values():
        assert len(c.values) == 5 and c.description and c.parameter


@pytest.mark.parametrize("shape", [(48, 48, 3), (40, 64, 3), (32, 32, 1), (8, 8, 3)])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_every_corruption_keeps_shape_and_dtype(name, shape):
    img = scenes(1, shape[0], shape[1], shape[2])[0]
    for severity in (0, *SEVERITIES):
        out = corrupt(img, name, severity, np.random.default_rng(severity))
        assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_zero_is_clean_and_distortion_grows_with_severity(name, channels):
    images = scenes(channels=channels)
    d = [distortion(corrupt_batch(images, name, s, seed=0), images) for s in (0, *SEVERITIES)]
    assert d[0] == 0.0
    assert all(b >= a * 0.98 for a, b in zip(d[1:], d[2:])), d
    assert d[5] > 1.3 * d[1] > 0, d


def test_corruptions_are_deterministic_with_a_seed():
    images = scenes(6)
    for name in CORRUPTIONS:
        a = corrupt_batch(images, name, 3, seed=7)
        np.testing.assert_array_equal(a, corrupt_batch(images, name, 3, seed=7))
        # An image's corruption depends on its index in the whole set, not on the chunk it came in.
        np.testing.assert_array_equal(a[2:], corrupt_batch(images[2:], name, 3, seed=7, start=2))
        if name in RANDOM:
            assert not np.array_equal(a, corrupt_batch(images, name, 3, seed=8)), name
    # Every image draws its own parameters: two copies of one image are corrupted differently.
    twins = np.repeat(images[:1], 2, axis=0)
    out = corrupt_batch(twins, "gaussian_noise", 2, seed=0)
    assert not np.array_equal(out[0], out[1])


def test_corrupt_does_not_modify_its_input():
    img = scenes(1)[0]
    before = img.copy()
    for name in CORRUPTIONS:
        corrupt(img, name, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(img, before)


def test_kernels_are_normalised_and_sized_by_their_parameter():
    for length in (1.0, 2.5, 7.2):
        k = motion_kernel(length, 0.7)
        assert k.sum() == pytest.approx(1.0) and (k > 1e-6).sum() >= int(length)
    assert (motion_kernel(6.0, 0.0) > 1e-6).sum(axis=1).max() >= 6  # horizontal streak
    small, large = disk_kernel(0.6), disk_kernel(2.2)
    assert small.sum() == pytest.approx(1.0) and large.sum() == pytest.approx(1.0)
    assert small.max() > large.max()


def test_bright_raises_the_hsv_value_keeping_hue_and_saturation():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    img[0, 0] = 0
    out = add_value(img, 0.3)
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.minimum(hsv[..., 2] + 0.3, 1.0)
    ref = np.clip(np.rint(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0), 0, 255)
    assert np.abs(out.astype(float) - ref).max() <= 1.0
    assert tuple(out[0, 0]) == (76, 76, 76)  # black has no hue: it turns grey


def test_bad_names_and_inputs_are_refused_with_the_fix():
    assert select(None) == list(CORRUPTIONS)
    assert select(" dark, jpeg,dark ") == ["dark", "jpeg"]
    with pytest.raises(ConfigError, match=r"--corruptions: unknown corruption 'fog'; choose from gaussian_noise, motion_blur"):
        select("dark,fog")
    img = scenes(1)[0]
    with pytest.raises(ConfigError, match="severity 6: use 0 \\(clean\\) to 5"):
        corrupt(img, "dark", 6)
    with pytest.raises(ValueError, match="uint8 image"):
        corrupt(img.astype(np.float32), "dark", 1)
