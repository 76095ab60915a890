import numpy as np
import pytest

from edgesight.edge.model.quant import dequantize, input_feeder, is_identity_pixels, pixels_to_input, quantize, softmax, top_k


def test_quantize_round_trip_and_saturation():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 100.0], np.float32)
    q = quantize(x, 0.5, 10, np.int8)
    assert q.tolist() == [8, 10, 11, 12, 127]
    np.testing.assert_allclose(dequantize(q[:4], 0.5, 10), x[:4])
    assert quantize(np.array([-5.0]), 1.0, 0, np.uint8).tolist() == [0]


def test_identity_pixel_quantisation_is_exact():
    assert is_identity_pixels(np.uint8, 1.0, 0)
    assert is_identity_pixels(np.uint8, 0.9998819828033447, 0)  # what calibration really gives
    assert is_identity_pixels(np.int8, 1.0, -128)
    assert not is_identity_pixels(np.uint8, 0.99, 0)  # 255 / 0.99 rounds to 258
    assert not is_identity_pixels(np.uint8, 1.0, 3)
    assert not is_identity_pixels(np.float32, 1.0, 0)


@pytest.mark.parametrize("dtype,scale,zp", [(np.uint8, 1.0, 0), (np.int8, 1.0, -128), (np.uint8, 0.9998819828033447, 0)])
def test_integer_fast_path_equals_float_path(dtype, scale, zp):
    px = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    fast = pixels_to_input(px, dtype, scale, zp)
    slow = quantize(px.astype(np.float32), scale, zp, dtype)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fast, slow)


def test_general_quantised_and_float_inputs():
    px = np.array([[[0], [128], [255]]], np.uint8)
    q = pixels_to_input(px, np.int8, 2.0, -100)
    assert q.ravel().tolist() == [-100, -36, 28]
    f = pixels_to_input(px, np.float32, 0.0, 0, mean=127.5, std=127.5)
    np.testing.assert_allclose(f.ravel(), [-1.0, 0.003921, 1.0], atol=1e-5)


def test_softmax_and_top_k():
    p = softmax(np.array([1.0, 3.0, 2.0]))
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 1
    idx, val = top_k(np.array([0.1, 0.5, 0.2, 0.2]), 3)
    assert idx.tolist() == [1, 2, 3] and val.tolist() == [0.5, 0.2, 0.2]
    assert top_k(np.array([0.3, 0.7]), 5)[0].tolist() == [1, 0]


def test_input_feeder_gives_the_quantised_input_for_each_input_type():
    px = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    p = px.astype(np.float64)
    expected = {
        (np.uint8, 1.0, 0): px,
        (np.int8, 1.0, -128): (p - 128).astype(np.int8),
        (np.int8, 2.0, -100): np.clip(np.round(p / 2.0) - 100, -128, 127).astype(np.int8),
        (np.float32, 0.0, 0, 127.5, 127.5): ((p - 127.5) / 127.5).astype(np.float32),
    }
    for args, want in expected.items():
        got = input_feeder(*args)(px)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=1e-6)
    same = input_feeder(np.uint8, 1.0, 0)(px)
    assert np.shares_memory(same, px), "identity uint8 input is passed through without a copy"
    assert input_feeder(np.int8, 1.0, -128)(px).dtype == np.int8
