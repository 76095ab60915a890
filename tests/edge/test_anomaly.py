"""The anomaly scorers, their fitting and calibration, the ok/defect decision and the bundle's
scorer files, in numpy (no TensorFlow, no interpreter)."""

from __future__ import annotations

import hashlib
import io
import json
import math

import numpy as np
import pytest

from edgesight.edge.errors import BundleError
from edgesight.edge.model.anomaly import (
    AnomalyDecider,
    AnomalyDetector,
    PadimScorer,
    PatchCoreScorer,
    image_scores,
    load_detector,
)
from edgesight.edge.model.anomaly_fit import (
    PADIM_EPS,
    anomaly_report,
    auroc,
    fit_padim,
    ledoit_wolf_shrinkage,
    greedy_coreset,
    rates_at,
    threshold_for,
    write_state,
)
from edgesight.edge.model.spec import ModelInfo, PreprocessSpec, read_model_info, write_model_info


def brute_nearest(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Distance of every patch to its nearest bank row, in float64, one patch at a time."""
    q = features.reshape(-1, features.shape[-1]).astype(np.float64)
    b = bank.astype(np.float64)
    out = np.array([np.sqrt(((b - row) ** 2).sum(1)).min() for row in q])
    return out.reshape(features.shape[:-1])


@pytest.mark.parametrize("shape, bank_rows, dim", [
    ((3, 4, 5), 50, 8),          # one image, 3x4 grid
    ((2, 14, 14), 300, 152),     # a batch of two images, the 224x224 grid
    ((1, 1), 7, 3),              # one patch
])
def test_patchcore_matches_brute_force_nearest_neighbour(shape, bank_rows, dim):
    rng = np.random.default_rng(dim)
    bank = rng.normal(0, 2, (bank_rows, dim)).astype(np.float32)
    feats = rng.normal(0, 2, (*shape, dim)).astype(np.float32)
    # near copies of the bank rows: each row is some patch's nearest, so none may be skipped
    flat = feats.reshape(-1, dim)
    k = min(len(flat), bank_rows)
    flat[:k] = bank[:k] + rng.normal(0, 0.3, (k, dim)).astype(np.float32)
    got = PatchCoreScorer(bank).patch_scores(feats)
    assert got.shape == shape and got.dtype == np.float32
    ref = brute_nearest(feats, bank)
    # the float32 expansion |q|^2 - 2 q.b + |b|^2 loses about 1e-7 * (|q|^2 + |b|^2) of d^2
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_patchcore_single_image_equals_its_row_of_a_batch():
    rng = np.random.default_rng(1)
    bank = rng.normal(0, 1, (40, 12)).astype(np.float32)
    batch = rng.normal(0, 1, (3, 4, 4, 12)).astype(np.float32)
    scorer = PatchCoreScorer(bank)
    both = scorer.patch_scores(batch)
    np.testing.assert_allclose(scorer.patch_scores(batch[2]), both[2], rtol=1e-6)
    # a patch that is a bank row scores (about) zero
    on_bank = scorer.patch_scores(bank[5].reshape(1, 1, 12))
    assert on_bank.shape == (1, 1) and on_bank[0, 0] < 1e-2  # float32 cancellation; neighbours lie ~4 apart


def test_patchcore_chunked_queries_agree_with_brute_force():
    # 2 x 48 x 48 = 4608 patches: more than one 4096-patch chunk, the second one partial
    rng = np.random.default_rng(7)
    bank = rng.normal(0, 1, (64, 6)).astype(np.float32)
    feats = rng.normal(0, 1, (2, 48, 48, 6)).astype(np.float32)
    got = PatchCoreScorer(bank).patch_scores(feats)
    ref = brute_nearest(feats, bank)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # patches on both sides of the chunk boundary (flat index 4095 / 4096: image 1, row 37)
    flat = got.reshape(-1)
    np.testing.assert_allclose(flat[4090:4100], ref.reshape(-1)[4090:4100], rtol=1e-5, atol=1e-5)


def _mahalanobis(u: np.ndarray, v: np.ndarray, vi: np.ndarray) -> float:
    try:
        from scipy.spatial.distance import mahalanobis
    except ImportError:
        d = (u - v).astype(np.float64)
        return math.sqrt(sum(d[i] * vi[i, j] * d[j] for i in range(len(d)) for j in range(len(d))))
    return float(mahalanobis(u.astype(np.float64), v.astype(np.float64), vi.astype(np.float64)))


def _random_padim(rng, grid, dim):
    p = grid[0] * grid[1]
    mean = rng.normal(0, 1, (p, dim)).astype(np.float32)
    a = rng.normal(0, 1, (p, dim, dim))
    inv_cov = (np.einsum("pij,pkj->pik", a, a) / dim + 0.5 * np.eye(dim)).astype(np.float32)  # symmetric positive definite
    return mean, inv_cov


@pytest.mark.parametrize("lead", [(), (3,)])
def test_padim_matches_mahalanobis_per_location(lead):
    rng = np.random.default_rng(3)
    grid, dim = (2, 3), 5
    mean, inv_cov = _random_padim(rng, grid, dim)
    feats = rng.normal(0, 1.5, (*lead, *grid, dim)).astype(np.float32)
    got = PadimScorer(mean, inv_cov).patch_scores(feats)
    assert got.shape == (*lead, *grid)
    flat = feats.reshape(-1, grid[0] * grid[1], dim)
    ref = np.array([[_mahalanobis(img[p], mean[p], inv_cov[p]) for p in range(grid[0] * grid[1])] for img in flat])
    np.testing.assert_allclose(got, ref.reshape(*lead, *grid), rtol=1e-4)


def test_padim_location_matters():
    # the same feature vector scores differently at two locations with different Gaussians
    mean = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    inv_cov = np.stack([np.eye(2), np.eye(2)]).astype(np.float32)
    feats = np.zeros((1, 2, 2), np.float32)
    np.testing.assert_allclose(PadimScorer(mean, inv_cov).patch_scores(feats), [[0.0, 5.0]], atol=1e-6)


def test_fit_padim_is_the_ledoit_wolf_shrunk_np_cov_plus_eps_inverted():
    from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

    rng = np.random.default_rng(5)
    n, h, w, d = 30, 2, 2, 6
    feats = rng.normal(0, 1, (n, h, w, d)) * rng.uniform(0.5, 3.0, d)
    scorer = fit_padim(feats.astype(np.float32))
    plain = fit_padim(feats.astype(np.float32), shrink=False)
    assert scorer.mean.shape == (h * w, d) and scorer.inv_cov.shape == (h * w, d, d)
    x = feats.astype(np.float32).astype(np.float64).reshape(n, h * w, d)
    for p in range(h * w):
        np.testing.assert_allclose(scorer.mean[p], x[:, p].mean(0), rtol=1e-5, atol=1e-6)
        cov = np.cov(x[:, p], rowvar=False)
        np.testing.assert_allclose(plain.inv_cov[p], np.linalg.inv(cov + PADIM_EPS * np.eye(d)), rtol=1e-4, atol=1e-5)
        s = sklearn_shrinkage(x[:, p] - x[:, p].mean(0), assume_centered=True)
        assert 0.05 < s < 1  # the amount is the data's, not a constant
        shrunk = (1 - s) * cov + s * np.trace(cov) / d * np.eye(d)
        np.testing.assert_allclose(scorer.inv_cov[p], np.linalg.inv(shrunk + PADIM_EPS * np.eye(d)), rtol=1e-4, atol=1e-5)


def test_ledoit_wolf_shrinkage_matches_sklearn_at_every_location():
    from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 12)) @ rng.normal(size=(12, 12))
    xc = x - x.mean(0)
    want = [sklearn_shrinkage(xc[:, p], assume_centered=True) for p in range(5)]
    np.testing.assert_allclose(ledoit_wolf_shrinkage(xc), want, rtol=1e-10, atol=1e-12)
    # many samples of an isotropic Gaussian need hardly any; a few of a skewed one need more
    iso = rng.normal(size=(5000, 1, 8))
    assert ledoit_wolf_shrinkage(iso - iso.mean(0))[0] > 0.9  # already a multiple of I: shrinking costs nothing
    few = rng.normal(size=(10, 1, 8)) * np.linspace(0.1, 5, 8)
    assert 0 < ledoit_wolf_shrinkage(few - few.mean(0))[0] < 1


def test_fit_padim_needs_two_images():
    with pytest.raises(Exception, match="PaDiM needs at least 2 good images to fit, got 1"):
        fit_padim(np.zeros((1, 2, 2, 3), np.float32))


def test_image_score_is_the_largest_patch():
    maps = np.array([[[0.1, 0.7], [0.3, 0.2]], [[2.0, 0.0], [0.0, 0.0]]], np.float32)
    np.testing.assert_allclose(image_scores(maps), [0.7, 2.0])
    det = AnomalyDetector(PatchCoreScorer(np.zeros((1, 2), np.float32)), 2.0, (1, 2))
    score, heat = det.score(np.array([[[3.0, 4.0], [0.0, 1.0]]], np.float32))
    assert score == pytest.approx(2.5)  # max(5, 1) / 2
    np.testing.assert_allclose(heat, [[2.5, 0.5]])


@pytest.mark.parametrize("project", [128, 8])  # 3 dims as given; 300 dims projected to 8
def test_greedy_coreset_count_and_distinct(project):
    rng = np.random.default_rng(11)
    pts = rng.normal(0, 1, (500, 300 if project == 8 else 3)).astype(np.float32)
    for size in (1, 17, 250):
        idx = greedy_coreset(pts, size, project=project, seed=2)
        assert len(idx) == size and len(set(idx.tolist())) == size
        assert idx.min() >= 0 and idx.max() < len(pts)
    np.testing.assert_array_equal(greedy_coreset(pts, 600), np.arange(500))


def test_greedy_coreset_distinct_when_points_repeat():
    # 5 distinct patches, each 20 times (a plain background repeats): 10 picks are still 10 points
    rng = np.random.default_rng(4)
    pts = np.repeat(rng.normal(0, 1, (5, 8)).astype(np.float32), 20, axis=0)
    for seed in range(4):
        idx = greedy_coreset(pts, 10, seed=seed)
        assert len(set(idx.tolist())) == 10
        # the first five cover the five distinct patches
        assert len({tuple(pts[i]) for i in idx[:5]}) == 5


@pytest.mark.parametrize("dim", [2, 200])
def test_greedy_coreset_one_point_per_cluster(dim):
    rng = np.random.default_rng(dim)
    k = 6
    centres = rng.normal(0, 1, (k, dim)) * 100.0
    labels = np.repeat(np.arange(k), 40)
    pts = (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32)
    order = rng.permutation(len(pts))
    pts, labels = pts[order], labels[order]
    for seed in range(3):
        idx = greedy_coreset(pts, k, seed=seed)
        assert sorted(labels[idx].tolist()) == list(range(k))


def _flagged(scores, threshold):
    return int((np.asarray(scores, np.float64) >= threshold).sum())


@pytest.mark.parametrize("n, fr", [(10, 0.01), (10, 0.1), (10, 0.3), (37, 0.05), (100, 0.01), (100, 0.29), (250, 0.5), (1, 0.2)])
def test_threshold_for_rule(n, fr):
    rng = np.random.default_rng(n)
    # distinct scores, each at least 0.1 % above the next lower one
    scores = np.cumsum(rng.uniform(0.01, 1.0, n)) + 1.0
    rng.shuffle(scores)
    t = threshold_for(scores, fr)
    allowed = math.floor(fr * n + 1e-9)
    assert allowed == math.floor(round(fr * n, 6))
    assert _flagged(scores, t) <= allowed
    below = np.sort(scores[scores < t])
    if len(below):
        # one step lower (the next score down) flags more than the share allows
        assert _flagged(scores, below[-1]) > allowed
    assert _flagged(scores, t) == allowed  # distinct scores: the share is used exactly


def test_threshold_for_ties_at_the_edge():
    scores = [5.0, 5.0, 5.0, 3.0, 2.0, 1.0, 1.0, 0.5, 0.4, 0.3]
    # 1 or 2 of 10 may be flagged, but three tie at the top: none can be
    for fr in (0.1, 0.2):
        t = threshold_for(scores, fr)
        assert 5.0 < t < 5.001 and _flagged(scores, t) == 0
    t = threshold_for(scores, 0.3)
    assert 3.0 < t < 3.001 and _flagged(scores, t) == 3
    t = threshold_for(scores, 0.6)  # 6 allowed; 1.0 would flag 7
    assert 1.0 < t < 1.001 and _flagged(scores, t) == 5
    assert threshold_for(scores, 1.0) == 0.3 and _flagged(scores, 0.3) == 10


def test_threshold_for_float32_scores_stay_below_one():
    rng = np.random.default_rng(8)
    for n, fr in ((10, 0.01), (50, 0.02), (200, 0.05)):
        scores = rng.gamma(4.0, 30.0, n).astype(np.float32)
        t = threshold_for(scores, fr)
        k = math.floor(fr * n + 1e-9)
        desc = np.sort(scores)[::-1]
        accepted = desc[k]  # the highest good score still called ok
        # the runtime divides float32 scores by the threshold, in float32 and in float64
        assert np.float32(accepted) / np.float32(t) < 1.0
        assert (scores / t)[scores == accepted].max() < 1.0
        assert float(accepted) / t < 1.0
        if k:
            assert (scores / t)[scores == desc[k - 1]].min() >= 1.0


def test_threshold_for_without_scores():
    with pytest.raises(Exception, match="no held-out good images to calibrate the threshold on"):
        threshold_for([], 0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.random(80) < 0.4
    scores = np.round(rng.normal(0, 1, 80) + y * 0.8, 1)  # one decimal: many ties, across classes too
    assert len(np.unique(scores)) < 60
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auroc_hand_cases():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5], [False, True]) == 0.5
    assert auroc([0.1, 0.5, 0.5, 0.9], [False, True, False, True]) == pytest.approx(0.875)  # (1 + 1 + 0.5 + 1) / 4
    assert auroc([0.1, 0.2], [False, False]) is None
    assert auroc([0.1, 0.2], [True, True]) is None
    assert auroc([], []) is None


def test_rates_at_counts():
    scores = [0.2, 0.5, 1.0, 1.5, 0.9, 1.0, 3.0, 0.1]
    defect = [False, False, False, False, True, True, True, True]
    r = rates_at(scores, defect, 1.0)  # at or above 1.0 is a defect
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 2, 2, 2)
    assert r["threshold"] == 1.0
    assert r["false_reject_rate"] == 0.5 and r["miss_rate"] == 0.5
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["f1"] == pytest.approx(0.5)
    r = rates_at(scores, defect, 5.0)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (0, 0, 4, 4)
    assert r["precision"] is None and r["recall"] == 0.0 and r["f1"] is None and r["miss_rate"] == 1.0
    r = rates_at([0.1, 0.2], [False, False], 0.15)
    assert (r["fp"], r["tn"], r["recall"], r["miss_rate"]) == (1, 1, None, None)


def test_anomaly_report_per_kind():
    scores = [0.2, 0.4, 0.6, 0.8, 1.2, 0.5, 2.0, 0.3, 0.9, 1.1, 3.0]
    kinds = ["good", "good", "ok", "good", "scratch", "scratch", "scratch", "stain", "stain", "stain", "crack"]
    r = anomaly_report(scores, kinds, 1.0)
    assert (r["task"], r["images"], r["good"], r["defects"]) == ("anomaly", 11, 4, 7)
    assert sorted(r["per_kind"]) == ["crack", "scratch", "stain"]
    scratch, stain, crack = r["per_kind"]["scratch"], r["per_kind"]["stain"], r["per_kind"]["crack"]
    # scratch 1.2, 0.5, 2.0 against good 0.2, 0.4, 0.6, 0.8: 1.2 and 2.0 beat all 4, 0.5 beats 2 -> 10/12
    assert (scratch["images"], scratch["caught"]) == (3, 2)
    assert scratch["auroc"] == pytest.approx(10 / 12)
    assert scratch["miss_rate"] == pytest.approx(1 / 3)
    # stain 0.3, 0.9, 1.1: beats 1, 4, 4 of the good -> 9/12
    assert (stain["images"], stain["caught"]) == (3, 1)
    assert stain["auroc"] == pytest.approx(9 / 12)
    assert (crack["images"], crack["caught"], crack["auroc"], crack["miss_rate"]) == (1, 1, 1.0, 0.0)
    assert r["auroc"] == pytest.approx((8 + 2 + 1 + 4 + 4 + 4) / 28)  # 7 defects x 4 good; 0.5 beats 2, 0.3 beats 1
    at = r["at_threshold"]
    assert (at["tp"], at["fp"], at["fn"], at["tn"]) == (4, 0, 3, 4)
    assert r["best_f1"]["threshold"] in scores
    assert r["good_scores"]["max"] == 0.8 and r["defect_scores"]["min"] == 0.3


def test_anomaly_report_good_only():
    r = anomaly_report([0.5, 0.7], ["good", "good"])
    assert r["auroc"] is None and r["per_kind"] == {} and r["best_f1"] is None and r["defect_scores"] is None


def test_decider_threshold():
    d = AnomalyDecider(1.0)
    assert d.labels == ["ok", "defect"]
    assert d(np.array([0.999]))[0] == "ok"
    assert d(np.array([1.0]))[0] == "defect"
    label, score, top, changed = d(np.array([0.5], np.float32))
    assert (label, score, changed) == ("ok", 0.5, True)
    assert top == [("ok", 0.5)]
    # without smoothing there is no hysteresis: just below 1.0 is ok again at once
    d = AnomalyDecider(1.0, smooth=1, hysteresis=0.5)
    assert [d(np.array([s]))[0] for s in (1.2, 0.99, 1.0)] == ["defect", "ok", "defect"]
    assert AnomalyDecider(2.0)(np.array([1.5]))[0] == "ok"


def test_decider_smoothing_window():
    d = AnomalyDecider(1.0, smooth=3, hysteresis=0.0)
    got = [d(np.array([s]))[:2] for s in (0.25, 2.5, 0.5, 0.0, 0.0)]
    np.testing.assert_allclose([g[1] for g in got], [0.25, 1.375, 3.25 / 3, 1.0, 0.5 / 3])
    # (2.5 + 0.5 + 0.0) / 3 is exactly 1.0: a defect; the window then drops 2.5
    assert [g[0] for g in got] == ["ok", "defect", "defect", "defect", "ok"]


def test_decider_hysteresis():
    d = AnomalyDecider(1.0, smooth=2, hysteresis=0.25)
    seq = [(0.875, 0.875), (1.375, 1.125), (0.625, 1.0), (0.875, 0.75), (0.75, 0.8125), (0.625, 0.6875),
           (1.0, 0.8125), (1.25, 1.125)]
    labels = []
    for raw, mean in seq:
        label, score, top, _ = d(np.array([raw]))
        assert score == mean
        assert top == [(label, raw)]
        labels.append(label)
    # a defect from a mean of 1.125; held while the mean stays >= 0.75 (1.0 * (1 - 0.25)); ok below it;
    # a defect again only at a mean >= 1.0
    assert labels == ["ok", "defect", "defect", "defect", "defect", "ok", "ok", "defect"]


# ----- the scorer files of a bundle ---------------------------------------------------------------

GRID, FEATURES = (2, 2), 4


def make_bundle(folder, method="padim", section=None, scorer=None):
    """A folder with model.json (task anomaly) and the scorer's .npy files, as convert writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if scorer is None:
        if method == "patchcore":
            scorer = PatchCoreScorer(rng.normal(0, 1, (9, FEATURES)).astype(np.float32))
        else:
            scorer = fit_padim(rng.normal(0, 1, (6, *GRID, FEATURES)).astype(np.float32))
    files = write_state(folder, scorer)
    det = AnomalyDetector(scorer, 2.5, GRID, 0.01)
    sec = det.section(files)
    sec.update(section or {})
    info = ModelInfo(labels=("ok", "defect"), preprocess=PreprocessSpec(height=32, width=32)).with_extra(task="anomaly", anomaly=sec)
    write_model_info(folder, info)
    return folder


def load(folder, verify=True):
    return load_detector(folder, read_model_info(folder), verify)


def edit_json(folder, change):
    path = folder / "model.json"
    d = json.loads(path.read_text())
    change(d["anomaly"])
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("method", ["padim", "patchcore"])
def test_load_detector_round_trip(tmp_path, method):
    folder = make_bundle(tmp_path / "b", method)
    names = sorted(p.name for p in (folder / "anomaly").iterdir())
    assert names == (["inv_cov.npy", "mean.npy"] if method == "padim" else ["bank.npy"])
    d = json.loads((folder / "model.json").read_text())
    for role, entry in d["anomaly"]["files"].items():
        assert entry["file"] == f"anomaly/{role}.npy"
        assert entry["sha256"] == hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    det = load(folder)
    assert (det.method, det.threshold, det.grid, det.false_reject) == (method, 2.5, GRID, 0.01)
    feats = np.random.default_rng(1).normal(0, 1, (*GRID, FEATURES)).astype(np.float32)
    rng = np.random.default_rng(0)
    if method == "patchcore":
        ref = PatchCoreScorer(rng.normal(0, 1, (9, FEATURES)).astype(np.float32))
    else:
        ref = fit_padim(rng.normal(0, 1, (6, *GRID, FEATURES)).astype(np.float32))
    score, heat = det.score(feats)
    np.testing.assert_allclose(heat, ref.patch_scores(feats) / 2.5, rtol=1e-6)
    assert score == pytest.approx(float(ref.patch_scores(feats).max()) / 2.5, rel=1e-6)


def _npy(array, pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=pickle)
    return buf.getvalue()


def test_load_detector_refuses_a_modified_file(tmp_path):
    folder = make_bundle(tmp_path / "b")
    mean = folder / "anomaly" / "mean.npy"
    arr = np.load(mean)
    arr[0, 0] += 1.0
    mean.write_bytes(_npy(arr))
    with pytest.raises(BundleError) as e:
        load(folder)
    assert str(e.value).startswith(f"{mean}: sha256 does not match anomaly.files.mean.sha256 in {folder / 'model.json'}")
    assert "--no-verify" in str(e.value)
    # unverified, the modified file is used as it is
    det = load(folder, verify=False)
    np.testing.assert_array_equal(det.scorer.mean, arr)


@pytest.mark.parametrize("name", ["../x.npy", "anomaly/../../x.npy", "/tmp/x.npy", "", None])
def test_load_detector_refuses_a_file_outside_the_bundle(tmp_path, name):
    folder = make_bundle(tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((4, 4), np.float32))
    edit_json(folder, lambda a: a["files"]["mean"].update(file=name))
    with pytest.raises(BundleError) as e:
        load(folder, verify=False)
    assert str(e.value) == (f"{folder / 'model.json'}: anomaly.files.mean.file: {name!r} is not a file inside the bundle; "
                            "copy the whole bundle again")


def test_load_detector_refuses_a_pickled_array(tmp_path):
    folder = make_bundle(tmp_path / "b")
    data = _npy(np.array([{"a": 1}, None], dtype=object), pickle=True)
    (folder / "anomaly" / "mean.npy").write_bytes(data)
    edit_json(folder, lambda a: a["files"]["mean"].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(BundleError, match=r"mean\.npy: not a plain \.npy array \(Object arrays cannot be loaded when allow_pickle=False"):
        load(folder)


def test_load_detector_refuses_integers(tmp_path):
    scorer = PadimScorer(np.zeros((4, FEATURES), np.float32), np.zeros((4, FEATURES, FEATURES), np.float32))
    folder = make_bundle(tmp_path / "b", scorer=scorer)
    data = _npy(np.zeros((4, FEATURES), np.int64))
    (folder / "anomaly" / "mean.npy").write_bytes(data)
    edit_json(folder, lambda a: a["files"]["mean"].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(BundleError, match=r"mean\.npy: holds int64 values, not the scorer's floats"):
        load(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_detector_refuses_values_that_are_not_finite(tmp_path, bad):
    rng = np.random.default_rng(0)
    mean = rng.normal(0, 1, (4, FEATURES)).astype(np.float32)
    inv_cov = np.stack([np.eye(FEATURES)] * 4).astype(np.float32)
    inv_cov[2, 1, 1] = bad
    folder = make_bundle(tmp_path / "b", scorer=PadimScorer(mean, inv_cov))
    with pytest.raises(BundleError) as e:
        load(folder)
    assert str(e.value).startswith(f"{folder / 'anomaly' / 'inv_cov.npy'}: holds float32 values that are not all finite")


def test_load_detector_refuses_wrong_shapes(tmp_path):
    rng = np.random.default_rng(0)
    # a 3x2 grid's arrays under a 2x2 grid
    scorer = PadimScorer(rng.normal(0, 1, (6, FEATURES)).astype(np.float32), np.stack([np.eye(FEATURES)] * 6).astype(np.float32))
    folder = make_bundle(tmp_path / "b", scorer=scorer)
    with pytest.raises(BundleError) as e:
        load(folder)
    assert str(e.value) == (f"{folder / 'model.json'}: anomaly arrays mean (6, 4), inv_cov (6, 4, 4) do not fit the 2x2 grid "
                            "of 4 features (expected 4 x 4 and 4 x 4 x 4); copy the whole bundle again")
    # a memory bank of 5 features where model.json says 4
    folder = make_bundle(tmp_path / "pc", "patchcore", scorer=PatchCoreScorer(np.zeros((3, 5), np.float32)), section={"features": 4})
    with pytest.raises(BundleError, match=r"anomaly arrays bank \(3, 5\) do not fit the 2x2 grid of 4 features \(expected M x 4\)"):
        load(folder)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(method="knn"), "anomaly.method is 'knn', not one of patchcore, padim, autoencoder"),
    (lambda a: a.pop("threshold"), "anomaly.threshold is None, not a positive number"),
    (lambda a: a.update(threshold=-1.5), "anomaly.threshold is -1.5, not a positive number"),
    (lambda a: a.update(threshold=0), "anomaly.threshold is 0, not a positive number"),
    (lambda a: a.update(threshold="NaN"), "anomaly.threshold is 'NaN', not a positive number"),
    (lambda a: a.update(grid=[2]), "anomaly.grid is [2], not [height, width]"),
    (lambda a: a["files"].pop("inv_cov"), "anomaly.files.inv_cov is missing"),
])
def test_load_detector_refuses_bad_entries(tmp_path, change, message):
    folder = make_bundle(tmp_path / "b")
    edit_json(folder, change)
    with pytest.raises(BundleError) as e:
        load(folder)
    assert str(e.value).startswith(f"{folder / 'model.json'}: {message}")


def test_load_detector_without_an_anomaly_entry(tmp_path):
    folder = make_bundle(tmp_path / "b")
    d = json.loads((folder / "model.json").read_text())
    del d["anomaly"]
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match="task is anomaly but there is no 'anomaly' entry"):
        load(folder)


def test_load_detector_missing_file(tmp_path):
    folder = make_bundle(tmp_path / "b", "patchcore")
    (folder / "anomaly" / "bank.npy").unlink()
    with pytest.raises(BundleError, match=r"bank\.npy: cannot read it \(No such file or directory\)"):
        load(folder)
