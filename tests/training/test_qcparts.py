"""Generated QC parts for anomaly detection and ``edgesight datasets synth --kind qc-parts``."""

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgesight.edge.errors import ConfigError
from edgesight.training.cli import datasets
from edgesight.training.synth import DEFECT_KINDS, PART_KINDS, render_part, write_qc_parts

SIZE = 96


def _pair(kind, defect, seed, severity=None):
    """The same part rendered good and with ``defect``, from two generators in the same state."""
    good, good_mask = render_part(kind, SIZE, np.random.default_rng(seed))
    bad, mask = render_part(kind, SIZE, np.random.default_rng(seed), defect, severity)
    return good, good_mask, bad, mask


@pytest.mark.parametrize("kind", PART_KINDS)
def test_same_seed_same_image_other_seed_other_image(kind):
    a, _ = render_part(kind, SIZE, np.random.default_rng(3))
    b, _ = render_part(kind, SIZE, np.random.default_rng(3))
    c, _ = render_part(kind, SIZE, np.random.default_rng(4))
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    rng = np.random.default_rng(0)
    first, second = render_part(kind, SIZE, rng)[0], render_part(kind, SIZE, rng)[0]
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 1  # good parts are not copies


@pytest.mark.parametrize("kind", PART_KINDS)
def test_a_part_stays_in_its_fixture(kind):
    # A fixed camera: the mean of many good parts is still a sharp part, not a blur.
    rng = np.random.default_rng(1)
    imgs = np.stack([cv2.cvtColor(render_part(kind, SIZE, rng)[0], cv2.COLOR_BGR2GRAY) for _ in range(6)]).astype(np.float32)
    centre = imgs[:, SIZE // 3 : 2 * SIZE // 3, SIZE // 3 : 2 * SIZE // 3].mean()
    corners = np.concatenate([imgs[:, :6, :6].ravel(), imgs[:, -6:, -6:].ravel()]).mean()
    assert centre > corners + 30  # the part is in the middle, the dark belt around it


@pytest.mark.parametrize("kind", PART_KINDS)
@pytest.mark.parametrize("defect", DEFECT_KINDS)
def test_defect_masks_mark_changed_pixels(kind, defect):
    for seed in (0, 1):
        good, good_mask, bad, mask = _pair(kind, defect, seed)
        assert not good_mask.any()
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        inside = mask > 0
        diff = np.abs(bad.astype(np.float32) - good.astype(np.float32)).mean(2)
        assert (diff[inside] > 0).mean() > 0.5, (kind, defect, seed)


def _inside_outside(good, bad, mask):
    diff = np.abs(bad.astype(np.float32) - good.astype(np.float32)).mean(2)
    return diff[mask > 0].mean(), diff[mask == 0].mean()


@pytest.mark.parametrize("kind", PART_KINDS)
@pytest.mark.parametrize("defect", DEFECT_KINDS)
def test_defects_stand_out_where_the_mask_says(kind, defect):
    # A rough "learnable" check at the lowest default severity: the change is concentrated in the mask.
    for seed in (1, 2, 3):
        good, _, bad, mask = _pair(kind, defect, seed, severity=0.3)
        inside, outside = _inside_outside(good, bad, mask)
        assert inside > 2 and inside > 10 * outside, (kind, defect, seed, inside, outside)


@pytest.mark.parametrize("kind", PART_KINDS)
def test_the_mildest_defects_are_visible_at_224(kind):
    for defect in DEFECT_KINDS:
        good, _ = render_part(kind, 224, np.random.default_rng(0))
        bad, mask = render_part(kind, 224, np.random.default_rng(0), defect, 0.3)
        inside, outside = _inside_outside(good, bad, mask)
        assert inside > 10 and inside > 20 * outside, (kind, defect, inside, outside)


def test_severity_scales_the_defect():
    _, _, _, small = _pair("pcb", "stain", 5, severity=0.0)
    _, _, _, large = _pair("pcb", "stain", 5, severity=1.0)
    assert (large > 0).sum() > 2 * (small > 0).sum() > 0


def test_write_layout_and_counts(tmp_path):
    counts = write_qc_parts(tmp_path / "qc", kind="machined", good=4, defects_per_kind=3, size=64, seed=1)
    expected = {"train/good": 4, "val/good": 1, "test/good": 1}
    expected.update({f"val/{d}": 2 for d in DEFECT_KINDS})
    expected.update({f"test/{d}": 3 for d in DEFECT_KINDS})
    assert counts == expected
    root = tmp_path / "qc"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "val"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["good"]
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good",) + DEFECT_KINDS)
    for folder, n in expected.items():
        files = sorted((root / folder).iterdir())
        assert [p.suffix for p in files] == [".png"] * n, folder
    img = cv2.imread(str(root / "test/crack/crack_0000.png"))
    assert img.shape == (64, 64, 3)
    again = write_qc_parts(tmp_path / "again", kind="machined", good=4, defects_per_kind=3, size=64, seed=1)
    assert again == counts
    assert (root / "val/stain/stain_0001.png").read_bytes() == (tmp_path / "again/val/stain/stain_0001.png").read_bytes()


def test_zero_defects_writes_good_parts_only(tmp_path):
    counts = write_qc_parts(tmp_path, kind="pcb", good=2, defects_per_kind=0, size=64)
    assert counts == {"train/good": 2, "val/good": 1, "test/good": 1}
    assert not (tmp_path / "test" / "scratch").exists()


@pytest.mark.parametrize("kwargs, name", [
    ({"kind": "gear"}, "kind"),
    ({"size": 32}, "size"),
    ({"good": -1}, "good"),
    ({"defects_per_kind": -2}, "defects_per_kind"),
])
def test_write_refuses_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        write_qc_parts(tmp_path / "qc", **kwargs)
    assert not (tmp_path / "qc").exists()


def test_render_refuses_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="part kind"):
        render_part("gear", SIZE, rng)
    with pytest.raises(ConfigError, match="size"):
        render_part("pcb", 32, rng)
    with pytest.raises(ConfigError, match="defect"):
        render_part("pcb", SIZE, rng, defect="dent")
    with pytest.raises(ConfigError, match="severity"):
        render_part("pcb", SIZE, rng, defect="crack", severity=1.5)


def test_cli_writes_the_layout_and_the_next_commands(tmp_path):
    out = tmp_path / "qc"
    args = ["synth", str(out), "--kind", "qc-parts", "--part", "machined", "--per-class", "3", "--size", "64", "--seed", "2"]
    result = CliRunner().invoke(datasets, args)
    assert result.exit_code == 0, result.output
    assert len(list((out / "train" / "good").glob("*.png"))) == 3
    assert len(list((out / "test" / "scratch").glob("*.png"))) == 20  # the default 20 per defect kind
    assert len(list((out / "val" / "misprint").glob("*.png"))) == 10
    assert f"machined images to {out}" in result.output
    assert f"edgesight train {out / 'train'} --task anomaly --defects {out / 'val'} --out runs/qc" in result.output
    assert f"edgesight evaluate runs/qc {out / 'test'}" in result.output
    assert cv2.imread(str(out / "test" / "good" / "good_0000.png")).shape == (64, 64, 3)


def test_cli_refuses_part_without_qc_parts(tmp_path):
    result = CliRunner().invoke(datasets, ["synth", str(tmp_path / "s"), "--part", "pcb"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "--kind qc-parts" in str(result.exception)
    assert not (tmp_path / "s").exists()
