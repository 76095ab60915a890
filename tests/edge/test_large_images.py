"""Large image files: decoded reduced when the model input is much smaller, refused above
``--max-pixels``, their size read from the file header."""

import json

import cv2
import numpy as np
import pytest

from edgesight.edge.model.preprocess import ImageTooLargeError, decode_image, image_size, read_image
from tests.conftest import run_cli


def _big_png(path, side=9000):
    """A mostly constant image: cheap to encode and a few hundred KB on disk."""
    img = np.full((side, side), 200, np.uint8)
    img[: side // 2] = 30
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return path


@pytest.fixture(scope="module")
def big_png(tmp_path_factory):
    return _big_png(tmp_path_factory.mktemp("big") / "big.png")


def test_header_size_of_png_and_jpeg():
    img = np.zeros((30, 50, 3), np.uint8)
    for ext in (".png", ".jpg"):
        assert image_size(cv2.imencode(ext, img)[1].tobytes()) == (50, 30)
    assert image_size(cv2.imencode(".bmp", img)[1].tobytes()) is None
    assert image_size(b"\xff\xd8\xff") is None


def test_a_large_png_is_decoded_reduced_for_a_small_model_input(big_png):
    reduced = read_image(big_png, "rgb", target=(96, 96))
    assert reduced.shape == (1125, 1125, 3) and reduced[0, 0].tolist() == [30, 30, 30]
    assert read_image(big_png, "grayscale", target=(96, 96)).shape == (1125, 1125, 1)
    assert read_image(big_png, "rgb", target=(2000, 2000)).shape == (4500, 4500, 3)  # only what keeps 2x the input


def test_a_large_jpeg_is_decoded_reduced():
    data = cv2.imencode(".jpg", np.full((1600, 2400, 3), 90, np.uint8))[1].tobytes()
    assert decode_image(data, "rgb", target=(100, 100)).shape == (200, 300, 3)
    assert decode_image(data, "rgb").shape == (1600, 2400, 3)


def test_above_max_pixels_is_refused_naming_the_file_and_the_flag(big_png):
    with pytest.raises(ImageTooLargeError) as e:
        read_image(big_png, "rgb", target=(96, 96), max_pixels=80_000_000)
    assert str(e.value) == (f"{big_png}: 9000x9000 is 81.0 megapixels, above the limit of 80; "
                            "shrink the image or raise --max-pixels")


@pytest.mark.slow
def test_classify_refuses_above_the_limit_and_max_pixels_raises_it(color_bundle, big_png, capsys):
    code, out, err = run_cli(["classify", color_bundle, big_png, "--max-pixels", "50000000", "--format", "json"], capsys)
    assert code == 1 and json.loads(out) == []
    assert err.strip().splitlines() == [f"skipped {big_png}: 9000x9000 is 81.0 megapixels, above the limit of 50; "
                                        "shrink the image or raise --max-pixels"]
    code, out, err = run_cli(["classify", color_bundle, big_png, "--max-pixels", "90000000", "--format", "json"], capsys)
    assert code == 0 and len(json.loads(out)) == 1 and err.strip() == ""


@pytest.mark.slow
def test_the_classifier_api_takes_max_pixels(color_bundle, big_png):
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.errors import ConfigError

    with pytest.raises(ImageTooLargeError, match="raise --max-pixels"):
        Classifier(color_bundle)(big_png)
    assert Classifier(color_bundle, max_pixels=10**8)(big_png).label
    with pytest.raises(ConfigError, match="max_pixels must be at least 1"):
        Classifier(color_bundle, max_pixels=0)
