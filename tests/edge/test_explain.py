"""Occlusion maps: the arithmetic on a known predictor, then on a real int8 bundle and through
``edgesight explain`` with TensorFlow blocked."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from edgesight.edge.tools.explain import check_patch, default_patch, occlusion_map, resolve_target
from edgesight.edge.tools.heatmap import encode_png, explanation_panel, grid, overlay
from tests.conftest import COLORS_BGR, run_cli

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
QUADRANT = (slice(0, 8), slice(8, 16))  # top-right of a 16x16 input


def _planted(size=16, bgr=COLORS_BGR["red"], grey=128):
    """A grey image whose only colour, the class evidence, is its top-right quadrant."""
    img = np.full((size, size, 3), grey, np.uint8)
    img[: size // 2, size // 2 :] = bgr
    return img


def _redness(batch):
    """Two classes: 'red' scores the mean redness of the image (a known, local evidence)."""
    x = batch.astype(np.float32)
    red = np.clip(x[..., 0] - x[..., 1], 0, None).mean(axis=(1, 2)) / 50.0
    p = 1 / (1 + np.exp(-(red - 0.5)))
    return np.stack([1 - p, p], axis=1)


def _hottest_in_quadrant(heat, quadrant=QUADRANT):
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    inside = np.zeros(heat.shape, bool)
    inside[quadrant] = True
    return inside[y, x], float(heat[inside].mean()), float(heat[~inside].mean())


def test_occlusion_map_finds_the_evidence_of_a_known_predictor():
    rgb = cv2.cvtColor(_planted(), cv2.COLOR_BGR2RGB)
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return _redness(batch)

    ex = occlusion_map(predict, rgb, patch=4, stride=2, batch_size=16)
    assert ex.heatmap.shape == (16, 16) and ex.heatmap.dtype == np.float32
    assert ex.heatmap.max() == 1.0 and ex.heatmap.min() == 0.0
    assert ex.predicted == ex.target == 1 and ex.max_drop > 0
    peak_inside, inside, outside = _hottest_in_quadrant(ex.heatmap)
    assert peak_inside and inside > 4 * outside
    # patches that never touch the quadrant change nothing: the far corner is exactly 0
    assert np.all(ex.heatmap[10:, :6] == 0)
    # 7x7 positions and the clean image, 16 at a time
    assert calls == [16, 16, 16, 2]
    # batching changes nothing
    one = occlusion_map(_redness, rgb, patch=4, stride=2, batch_size=1)
    np.testing.assert_allclose(one.heatmap, ex.heatmap, atol=1e-6)
    # explaining the other class: covering red raises its probability, so nothing is hot
    other = occlusion_map(_redness, rgb, 0, patch=4, stride=2)
    assert other.target == 0 and other.max_drop == 0 and not other.heatmap.any()


def test_patch_defaults_and_checks():
    assert default_patch(224, 224) == (45, 22)
    assert default_patch(16, 20) == (3, 1)
    assert check_patch(None, None, 16, 16) == (3, 1)
    assert check_patch(8, None, 16, 16) == (8, 4)
    with pytest.raises(ConfigError, match=r"^--patch 17: must be 1 to 16, the model's input is 16x16; leave it out for 3$"):
        check_patch(17, None, 16, 16)
    with pytest.raises(ConfigError, match=r"^--stride 5: must be 1 to the patch size 4"):
        check_patch(4, 5, 16, 16)
    assert resolve_target(None, ["a", "b"]) is None
    assert resolve_target("b", ["a", "b"]) == 1 and resolve_target(0, ["a", "b"]) == 0
    with pytest.raises(ConfigError, match=r"^--target 'c': not a label of the model; choose one of a, b$"):
        resolve_target("c", ["a", "b"])


def test_pictures():
    rgb = cv2.cvtColor(_planted(), cv2.COLOR_BGR2RGB)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 3] = 1.0
    over = overlay(rgb, heat)
    assert over.shape == (16, 16, 3) and over.dtype == np.uint8
    panel = explanation_panel(rgb, heat, ["red 0.97", "occlusion: a-very-long-file-name-" * 5 + ".png"])
    # two 224-pixel views (16 x 14) and a gap, two caption lines under them
    assert panel.shape[1] == 224 * 2 + 6 and panel.shape[0] > 224
    gray = explanation_panel(rgb[..., :1], heat, ["x"])
    assert gray.shape[2] == 3
    g = grid([panel, panel, gray], cols=2)
    assert g.shape[1] == 2 * panel.shape[1] + 3 * 6
    assert cv2.imdecode(np.frombuffer(encode_png(g), np.uint8), cv2.IMREAD_COLOR).shape == g.shape


@pytest.mark.slow
def test_occlusion_on_the_int8_bundle_points_at_the_planted_patch(color_bundle):
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.tools.explain import BatchPredictor

    with Classifier(color_bundle) as clf:
        img = _planted(32)  # resized to the model's 16x16: the quadrant stays the quadrant
        assert clf(img).label == "red"
        heat = clf.explain(img)
        assert heat.shape == (16, 16) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() == 1.0
        peak_inside, inside, outside = _hottest_in_quadrant(heat)
        assert peak_inside and inside > 4 * outside
        assert np.array_equal(clf.explain(img, target="red"), heat)
        with pytest.raises(ConfigError, match="--patch 40"):
            clf.explain(img, patch=40)
        # the batched interpreter gives what the bundle's own interpreter gives image by image
        predict = BatchPredictor(clf.model, clf.bundle.model_path, batch_size=8)
        assert predict.batched
        batch = np.random.default_rng(3).integers(0, 256, (11, 16, 16, 3), dtype=np.uint8)
        np.testing.assert_allclose(predict(batch), clf.model.predict_batch(batch), atol=1e-6)


@pytest.mark.slow
def test_explain_cli_on_a_bundle_without_tensorflow(color_bundle, color_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "planted.png"), _planted(32))
    cv2.imwrite(str(images / "red_000.png"), cv2.imread(str(color_data / "red" / "red_000.png")))
    (images / "broken.png").write_bytes(b"")
    out = tmp_path / "explained"
    code = BLOCK_TF + (
        "from edgesight.cli import main\n"
        f"main(['explain', {str(color_bundle)!r}, {str(images)!r}, {str(color_data / 'green' / 'green_00*.png')!r}, '--out', {str(out)!r}])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tensorflow" not in r.stderr.lower()
    assert f"12 occlusion map(s) in {out}" in r.stdout
    assert "skipped" in r.stderr and "broken.png: empty file" in r.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["method"] == "occlusion" and index["input_size"] == [16, 16]
    assert index["params"] == {"patch": 3, "stride": 1, "fill": 128, "batch": 16}
    assert index["skipped"] == [{"image": str(images / "broken.png"), "reason": "empty file (0 bytes)"}]
    by_name = {e["output"]: e for e in index["images"]}
    assert sorted(by_name) == sorted(["planted.png", "red_000.png"] + [f"green_{i:03d}.png" for i in range(10)])
    for name, e in by_name.items():
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape[1] == 2 * 224 + 6
        assert {"image", "label", "score", "target", "target_score", "peak", "max_drop"} <= set(e)
    planted = by_name["planted.png"]
    assert planted["label"] == planted["target"] == "red"
    x, y = planted["peak"]
    assert x >= 8 and y < 8
    assert all(by_name[f"green_{i:03d}.png"]["label"] == "green" for i in range(10))


@pytest.mark.slow
def test_explain_cli_errors_are_one_line(color_bundle, tmp_path, capsys):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _planted())
    code, _, err = run_cli(["explain", color_bundle, img, "--out", tmp_path / "o", "--patch", "99"], capsys)
    assert code == 1 and err == "error: --patch 99: must be 1 to 16, the model's input is 16x16; leave it out for 3\n"
    code, _, err = run_cli(["explain", color_bundle, img, "--out", tmp_path / "o", "--target", "purple"], capsys)
    assert code == 1 and err == "error: --target 'purple': not a label of the model; choose one of blue, green, red\n"
    code, _, err = run_cli(["explain", color_bundle, img, "--out", img], capsys)
    assert code == 1 and err == f"error: --out {img}: is a file; give a folder for the pictures and index.json\n"
    code, _, err = run_cli(["explain", color_bundle, tmp_path / "nothing-*.png", "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.splitlines()[-1] == "error: no images to explain; give image files, folders or glob patterns"


@pytest.mark.slow
def test_explain_again_into_the_same_folder_keeps_only_what_the_index_lists(color_bundle, color_data, tmp_path, capsys):
    out = tmp_path / "explained"
    red, green = color_data / "red" / "red_000.png", color_data / "green" / "green_000.png"
    assert run_cli(["explain", color_bundle, red, green, "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["green_000.png", "index.json", "red_000.png"]
    (out / "notes.txt").write_text("mine")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not ours")
    index = json.loads((out / "index.json").read_text())
    index["images"].append({"output": "../outside.png"})  # a crafted index never reaches outside the folder
    (out / "index.json").write_text(json.dumps(index))
    assert run_cli(["explain", color_bundle, green, "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["green_000.png", "index.json", "notes.txt"]
    assert [e["output"] for e in json.loads((out / "index.json").read_text())["images"]] == ["green_000.png"]
    assert outside.read_bytes() == b"not ours" and (out / "notes.txt").read_text() == "mine"
