"""Inference batches shrink with the input size, so large inputs do not run out of memory."""

import cv2
import numpy as np
import pytest

from edgesight.edge.model.spec import PreprocessSpec
from edgesight.training.data import Sample
from edgesight.training.headfit import extract
from edgesight.training.pipeline import BATCH_PIXELS, inference_batch


@pytest.mark.parametrize("side, wanted, expected", [(224, 64, 32), (448, 64, 8), (96, 64, 64), (448, 4, 4), (4000, 64, 1)])
def test_an_inference_batch_holds_at_most_the_pixel_budget(side, wanted, expected):
    assert inference_batch(side, side, wanted) == expected
    assert expected == 1 or expected * side * side <= BATCH_PIXELS


class _Features:
    """Stands in for the pooled-feature model: records the batch sizes it is called with."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, training=False):
        self.batches.append(len(x))
        return np.full((len(x), 4), float(len(self.batches)), np.float32)


def _augment(x, training=True):
    return np.asarray(x)[:, ::-1]


def test_head_features_of_large_images_are_computed_in_small_batches(tmp_path):
    paths = []
    for i in range(20):
        p = tmp_path / f"img_{i:02d}.png"
        cv2.imwrite(str(p), np.full((12, 12, 3), 10 * i, np.uint8))
        paths.append(Sample(str(p), "a"))
    features = _Features()
    out = extract(features, paths, PreprocessSpec(height=448, width=448), augment=_augment, copies=2, progress=False)
    # 20 images decoded in one chunk of 64, run through the model 8 at a time, for each copy
    assert features.batches == [8, 8, 4, 8, 8, 4]
    assert out.shape == (2, 20, 4) and out.dtype == np.float16
    assert out[0, :, 0].tolist() == [1] * 8 + [2] * 8 + [3] * 4


def test_int8_fine_tuning_takes_smaller_batches_of_larger_inputs():
    from edgesight.convert.qat import BATCH, batch_size, batches

    assert batch_size(224, 224) == BATCH == 32
    assert batch_size(96, 96) == 32
    assert batch_size(448, 448) == 8
    # the progress bar counts the batches the fit runs: 100 images, 3 epochs
    assert batches(100, 3, 224, 224) == 3 * 4
    assert batches(100, 3, 448, 448) == 3 * 13
