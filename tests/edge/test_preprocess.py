import cv2
import numpy as np
import pytest

from edgesight.edge.model.preprocess import ImageReadError, decode_image, is_image_path, load_for_model, read_image, resize
from edgesight.edge.model.spec import PreprocessSpec


def test_image_extensions_any_case(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.BMP", "e.webp", "f.TIF", "g.tiff"):
        assert is_image_path(tmp_path / name)
    for name in ("a.txt", "b.gif", "c", "d.jpg.bak"):
        assert not is_image_path(tmp_path / name)


def test_read_converts_gray_palette_rgba_to_rgb(tmp_path):
    from PIL import Image

    Image.new("L", (10, 6), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (10, 6), (255, 0, 0, 30)).save(tmp_path / "rgba.png")
    Image.new("RGB", (10, 6), (0, 0, 255)).convert("P").save(tmp_path / "pal.png")
    g = read_image(tmp_path / "gray.png", "rgb")
    assert g.shape == (6, 10, 3) and g.dtype == np.uint8 and (g == 77).all()
    r = read_image(tmp_path / "rgba.png", "rgb")
    assert r.shape == (6, 10, 3) and tuple(r[0, 0]) == (255, 0, 0)
    p = read_image(tmp_path / "pal.png", "rgb")
    assert tuple(p[0, 0]) == (0, 0, 255)
    gray = read_image(tmp_path / "rgba.png", "grayscale")
    assert gray.shape == (6, 10, 1)


def test_bgr_file_is_read_as_rgb(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), img)
    assert tuple(read_image(tmp_path / "red.png")[0, 0]) == (200, 0, 0)


def test_unreadable_images_raise_with_path(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="text.jpg: not a decodable image"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(ImageReadError, match="missing.png: cannot read"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError):
        decode_image(b"", "rgb")


def test_resize_modes():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # a white centre band, black left and right quarters
    s = resize(img, (50, 50), "stretch", "area")
    assert s.shape == (50, 50, 3)
    assert s[:, :12].max() == 0 and s[:, 13:37].min() == 255
    c = resize(img, (50, 50), "crop", "area")
    assert c.shape == (50, 50, 3) and c.min() == 255  # centre crop sees only the band
    p = resize(img, (50, 50), "pad", "area")
    assert p.shape == (50, 50, 3)
    assert p[:12].max() == 0 and p[-12:].max() == 0  # letterbox bars top and bottom
    assert p[25, 25].min() == 255


def test_resize_keeps_channel_axis_for_grayscale():
    g = np.full((20, 30, 1), 9, np.uint8)
    for mode in ("stretch", "crop", "pad"):
        out = resize(g, (8, 8), mode, "bilinear")
        assert out.shape == (8, 8, 1)


def test_load_for_model(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.full((40, 60, 3), 10, np.uint8))
    spec = PreprocessSpec(height=16, width=24, color="grayscale")
    out = load_for_model(tmp_path / "x.png", spec)
    assert out.shape == (16, 24, 1) and out.dtype == np.uint8


def test_frame_path_equals_file_path(tmp_path):
    from edgesight.edge.model.preprocess import frame_to_pixels

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), img)
    for mode in ("stretch", "crop", "pad"):
        spec = PreprocessSpec(height=32, width=24, resize=mode)
        np.testing.assert_array_equal(frame_to_pixels(img, spec), load_for_model(tmp_path / "f.png", spec))


def test_roi_crop_and_errors():
    from edgesight.edge.errors import EdgesightError
    from edgesight.edge.model.preprocess import crop_roi, frame_to_pixels, parse_roi

    img = np.zeros((100, 200, 3), np.uint8)
    img[10:60, 20:120] = (0, 0, 255)  # a red window in BGR
    roi = parse_roi("20,10,100,50")
    assert crop_roi(img, roi).shape == (50, 100, 3)
    px = frame_to_pixels(img, PreprocessSpec(height=8, width=8), roi)
    assert (px[..., 0] == 255).all() and (px[..., 1:] == 0).all()  # pure red, in RGB order
    with pytest.raises(EdgesightError, match="expected x,y,w,h"):
        parse_roi("1,2,3")
    with pytest.raises(EdgesightError, match="outside the 200x100 frame"):
        crop_roi(img, (150, 0, 100, 10))
