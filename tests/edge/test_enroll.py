"""Embeddings and few-shot enrolment on a tiny bundle built without TensorFlow: the embedding
output found by name and dequantised, enrol -> run -> remove, the maths against a plain
reference, and bad input (one line each, the bundle unchanged)."""

import json
import shutil

import numpy as np
import pytest

from edgesight.edge.classifier import Classifier
from edgesight.edge.errors import BundleError, ConfigError
from edgesight.edge.model.enroll import EnrolledClass, EnrolledSet, Reference, centred, enrol
from edgesight.edge.model.interpreter import TFLiteClassifier
from edgesight.edge.model.preprocess import ImageReadError
from tests.conftest import run_cli
from tests.edge.tiny_model import EMB, LABELS, colour_image, snapshot, tiny_tflite, write_images, write_tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def bundle(tiny, tmp_path):
    """A fresh copy of the tiny bundle for a test that changes it."""
    return shutil.copytree(tiny, tmp_path / "bundle")


def test_model_json_describes_both_outputs_and_the_runtime_finds_them_by_name(tiny):
    info = json.loads((tiny / "model.json").read_text())
    scores, emb = info["outputs"]["scores"], info["outputs"]["embedding"]
    # the tiny model lists the embedding first: a runtime going by position would swap them
    assert (scores["position"], emb["position"]) == (1, 0) and emb["size"] == EMB
    clf = TFLiteClassifier(tiny / "model.tflite", outputs=info["outputs"])
    assert clf.output_tensor.name == "scores_out" and clf.embedding_tensor.name == "embedding_out"
    assert clf.num_classes == 3 and emb["dtype"] == "uint8" and emb["scale"] == 1.0 and emb["zero_point"] == 0
    wrong = {**info["outputs"], "embedding": {**emb, "name": "pool"}}
    with pytest.raises(BundleError, match=r"model.json outputs.embedding names tensor 'pool', which the model does not have .*"
                                          r"re-run 'edgesight convert'"):
        TFLiteClassifier(tiny / "model.tflite", outputs=wrong)
    with pytest.raises(BundleError, match="2 output tensors and nothing says which holds the class scores; use the bundle folder"):
        TFLiteClassifier(tiny / "model.tflite")


def test_embedding_output_is_dequantised_and_embed_normalises_it(tiny):
    info = json.loads((tiny / "model.json").read_text())
    emb_desc = info["outputs"]["embedding"]
    # a quantisation the output does not have by default: scale 2, zero point 10
    clf = Classifier(tiny)
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4, :4] = (200, 100, 50)  # top-left quadrant
    clf.model.predict(pixels)
    raw = clf.model._interp.get_tensor(clf.model.embedding_tensor.index)[0]
    assert raw.dtype == np.uint8 and list(raw[:3]) == [200, 100, 50] and list(raw[3:]) == [0] * 9
    expected = (raw.astype(np.float32) - emb_desc["zero_point"]) * emb_desc["scale"]
    np.testing.assert_array_equal(clf.model.output_embedding(), expected)
    import dataclasses

    clf.model.embedding_tensor = dataclasses.replace(clf.model.embedding_tensor, scale=2.0, zero_point=10)
    np.testing.assert_allclose(clf.model.output_embedding(), (raw.astype(np.float32) - 10) * 2.0)
    clf = Classifier(tiny)
    v = clf.embed(colour_image("red", np.random.default_rng(0)))
    assert v.dtype == np.float32 and v.shape == (EMB,) and abs(float(np.linalg.norm(v)) - 1) < 1e-6
    # RGB quadrant means of a red image: R high, G and B low, in every quadrant
    assert (v[0::3] > 3 * v[1::3]).all() and (v[0::3] > 3 * v[2::3]).all()


def test_scores_match_softmax_over_log_probs_and_enrolled_logits():
    rng = np.random.default_rng(0)
    ref = Reference(rng.random((30, 6)).astype(np.float32), np.repeat(np.arange(3), 10))
    c = ref.centre()
    protos = [EnrolledClass(n, centred(rng.random(6), c), a, b, 5) for n, a, b in (("x", 12.0, -7.0), ("y", 20.0, -15.0))]
    es = EnrolledSet(tuple(protos), c)
    p = np.array([0.7, 0.2, 0.1], np.float32)
    e = rng.random(6).astype(np.float32)
    z = [a * float(centred(e, c) @ m) + b for m, a, b in ((x.prototype, x.scale, x.bias) for x in protos)]
    logits = np.concatenate([np.log(p), z])
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(es.combine(p, e), expected, rtol=1e-5)
    assert es.combine(p, e)[:3].argmax() == 0  # the trained classes keep their order
    np.testing.assert_array_equal(EnrolledSet((), c).combine(p, e), p)  # nothing enrolled: the model's own scores


def test_calibration_separates_the_new_class_from_the_trained_ones(tiny):
    clf = Classifier(tiny)
    rng = np.random.default_rng(3)
    shots = np.stack([clf.embed(colour_image("yellow", rng)) for _ in range(5)])
    cls = enrol("yellow", shots, clf._reference)
    assert cls.scale > 0 and cls.shots == 5 and abs(float(np.linalg.norm(cls.prototype)) - 1) < 1e-5
    es = EnrolledSet((cls,), clf._reference.centre())
    new = es.logits(clf.embed(colour_image("yellow", rng)))[0]
    old = [es.logits(clf.embed(colour_image(c, rng)))[0] for c in LABELS]
    assert new > 0 > max(old)  # log-odds: yellow for the new image, a trained class for the others


def test_enrol_run_remove_round_trip(bundle, tmp_path, capsys):
    before = snapshot(bundle)
    shots = write_images(tmp_path / "yellow", "yellow", 5, seed=1)
    test = write_images(tmp_path / "test", "yellow", 4, seed=2) + write_images(tmp_path / "test", "red", 4, seed=3)
    code, out, err = run_cli(["enroll", bundle, "--class", "yellow", *shots], capsys)
    assert code == 0, err
    assert f"enrolled 'yellow' from 5 images into {bundle.resolve()}" in out and "enrolled classes: yellow" in out
    info = json.loads((bundle / "model.json").read_text())
    entry = info["enrolment"]["classes"][0]
    assert entry["label"] == "yellow" and entry["file"] == "enrolled/yellow.npy" and entry["shots"] == 5
    proto = np.load(bundle / "enrolled" / "yellow.npy", allow_pickle=False)
    assert proto.dtype == np.float32 and proto.shape == (EMB,)
    assert (bundle / "labels.txt").read_text() == "blue\ngreen\nred\n"  # the model's own output, unchanged
    # classify: the new class beside the trained ones, in top-k and under a threshold
    code, out, err = run_cli(["classify", bundle, tmp_path / "test", "--format", "json", "--top-k", "4"], capsys)
    assert code == 0, err
    rows = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(out)}
    assert {r["label"] for n, r in rows.items() if n.startswith("yellow")} == {"yellow"}
    assert {r["label"] for n, r in rows.items() if n.startswith("red")} == {"red"}
    assert all(len(r["top_k"]) == 4 and abs(sum(t["score"] for t in r["top_k"]) - 1) < 1e-3 for r in rows.values())
    # run: the camera loop over the folder, with smoothing
    code, out, err = run_cli(["run", bundle, "--source", tmp_path / "test", "--jsonl", tmp_path / "r.jsonl", "--smooth", "2",
                              "--quiet", "--stats-interval", "0"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    labels = [e["label"] for e in events]  # red_00..03, then yellow_00..03
    assert labels[:4] == ["red"] * 4 and labels[-1] == "yellow" and set(labels) == {"red", "yellow"}
    assert all(len(e["top_k"]) == 3 for e in events)
    # the Python API sees it after a reload
    assert Classifier(bundle).labels == ["blue", "green", "red", "yellow"]
    # re-enrolling replaces the class, then removing it restores the bundle byte for byte
    Classifier(bundle).enroll("yellow", shots[:3])
    info = json.loads((bundle / "model.json").read_text())
    assert [c["shots"] for c in info["enrolment"]["classes"]] == [3]
    code, out, err = run_cli(["enroll", bundle, "--remove", "yellow"], capsys)
    assert code == 0, err
    assert "removed 'yellow'" in out and "enrolled classes: none" in out
    assert snapshot(bundle) == before


def test_enrol_into_a_new_bundle_keeps_the_original_and_the_copy_deploys(bundle, tmp_path, capsys):
    from edgesight.edge.fleet.archive import deploy_files
    from edgesight.edge.fleet.profiles import load_profile, resolve

    before = snapshot(bundle)
    shots = write_images(tmp_path / "yellow", "yellow", 5, seed=1)
    code, out, err = run_cli(["enroll", bundle, "--class", "yellow", tmp_path / "yellow", "--out", tmp_path / "new"], capsys)
    assert code == 0, err
    assert snapshot(bundle) == before and len(shots) == 5
    assert Classifier(tmp_path / "new").enrolled == ("yellow",)
    package = deploy_files(tmp_path / "new", resolve(load_profile("generic-linux")))
    for name in ("model/enrolled/yellow.npy", "model/reference_embeddings.npy"):
        assert package.manifest["files"][name] == json.loads(json.dumps(package.manifest))["files"][name]
        assert package.files[name] == (tmp_path / "new" / name.split("/", 1)[1]).read_bytes()
    # an altered prototype is refused like an altered model
    np.save(tmp_path / "new" / "enrolled" / "yellow.npy", np.ones(EMB, np.float32))
    with pytest.raises(BundleError, match=r"yellow.npy: sha256 does not match enrolment.classes\[0\].sha256 in .*model.json"):
        Classifier(tmp_path / "new")
    with pytest.raises(BundleError, match="yellow.npy: sha256 does not match"):
        deploy_files(tmp_path / "new", resolve(load_profile("generic-linux")))


@pytest.mark.parametrize("case", ["unreadable image", "trained class", "no embedding output", "unknown"])
def test_bad_enrolment_is_one_line_and_leaves_the_bundle_unchanged(case, bundle, tmp_path, capsys):
    shots = write_images(tmp_path / "yellow", "yellow", 3, seed=1)
    target = bundle
    if case == "unreadable image":
        bad = tmp_path / "yellow" / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        args, line = ["--class", "yellow", *shots, bad], f"error: {bad}: "
        api, error = ("yellow", shots + [bad]), ImageReadError
    elif case == "trained class":
        args, line = ["--class", "red", *shots], f"error: 'red' is already a trained class of {bundle}; choose another name"
        api, error = ("red", shots), ConfigError
    elif case == "unknown":
        args, line = ["--class", "unknown", *shots], "error: 'unknown' is what a result below --threshold is called"
        api, error = ("unknown", shots), ConfigError
    else:
        target = write_tiny_bundle(tmp_path / "plain", embedding=False)
        args = ["--class", "yellow", *shots]
        line = f"error: {target}: the model has no embedding output, so it cannot embed or enrol; convert it again with 'edgesight convert --embedding'"
        api, error = ("yellow", shots), BundleError
    before = snapshot(target)
    code, out, err = run_cli(["enroll", target, *args], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith(line), err
    clf = Classifier(target)
    with pytest.raises(error):
        clf.enroll(*api)
    assert clf.labels == list(LABELS) and snapshot(target) == before
    assert not (target.parent / (target.name + ".partial")).exists()


def test_remove_and_list_errors(bundle, capsys):
    code, out, err = run_cli(["enroll", bundle, "--remove", "red"], capsys)
    assert code == 1 and "error: 'red' is not an enrolled class" in err and "a trained class cannot be removed" in err
    code, out, err = run_cli(["enroll", bundle], capsys)
    assert code == 0 and "no enrolled classes" in out


def test_embed_command_writes_npy_and_the_image_list(tiny, tmp_path, capsys):
    paths = write_images(tmp_path / "imgs", "red", 2) + write_images(tmp_path / "imgs", "blue", 2)
    (tmp_path / "imgs" / "zz.png").write_bytes(b"nope")
    code, out, err = run_cli(["embed", tiny, tmp_path / "imgs", "--out", tmp_path / "e.npy"], capsys)
    assert code == 0, err
    assert "skipped" in err and "zz.png" in err
    vectors = np.load(tmp_path / "e.npy", allow_pickle=False)
    listed = json.loads((tmp_path / "e.json").read_text())
    assert vectors.shape == (4, EMB) and listed["paths"] == [str(p) for p in sorted(paths)]
    clf = Classifier(tiny)
    np.testing.assert_allclose(vectors[0], clf.embed(sorted(paths)[0]), rtol=1e-6)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])  # blue is nearer blue than red
    code, out, err = run_cli(["embed", write_tiny_bundle(tmp_path / "plain", embedding=False), tmp_path / "imgs", "-o",
                              tmp_path / "f.npy"], capsys)
    assert code == 1 and "has no embedding output" in err and not (tmp_path / "f.npy").exists()


def test_single_output_model_still_loads(tmp_path):
    clf = TFLiteClassifier(tiny_tflite(embedding=False))
    assert clf.embedding_tensor is None and clf.num_classes == 3


def _frame(image, i=0):
    from edgesight.edge.frames import Frame

    return Frame(image=image, index=i, timestamp=0.0, wall_time=0.0)


def _result(i=0):
    from edgesight.edge.frames import Result

    return Result(frame_index=i, timestamp=0.0, wall_time=0.0, label="red", score=0.9, top_k=[("red", 0.9)], latency_ms=1.0)


def test_http_enroll_takes_shots_from_the_frames_on_screen(bundle, tmp_path, monkeypatch):
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.session import http_sink
    from tests.edge.test_web import jpeg, request

    before = snapshot(bundle)
    clf = Classifier(bundle)
    cfg = RunConfig(source="synthetic", http="127.0.0.1:0", enroll_shots=3, enroll_dir=str(tmp_path / "state"))
    # a bundle folder the service cannot write (a deployed release): saved into the state folder
    monkeypatch.setattr("edgesight.edge.model.enroll_files.writable", lambda root: False)
    sink = http_sink(cfg, clf)
    try:
        assert sink.needs_raw_frame
        addr = sink.address
        write = {"X-Edgesight": "1"}
        status, _, body = request(addr, "POST", "/enroll?name=yellow", headers=write)
        assert status == 409 and "no frame yet" in json.loads(body)["error"]
        rng = np.random.default_rng(4)
        sink.write(_frame(colour_image("yellow", rng)), _result(), colour_image("red", rng))  # shown with an overlay
        status, _, body = request(addr, "POST", "/enroll?name=yellow")
        assert status == 403 and "X-Edgesight: 1" in json.loads(body)["error"]
        status, _, body = request(addr, "POST", "/enroll?name=yellow", headers={**write, "Origin": "http://evil.example"})
        assert status == 403 and "cross-origin" in json.loads(body)["error"]
        status, _, body = request(addr, "POST", "/enroll?name=red", headers=write)
        assert status == 400 and "already a trained class" in json.loads(body)["error"]
        status, _, body = request(addr, "POST", "/enroll?name=yellow", headers=write)
        assert (status, json.loads(body)) == (200, {"name": "yellow", "shots": 1, "needed": 3, "enrolled": False})
        status, _, body = request(addr, "POST", "/enroll?name=yellow", body=b"not an image", headers=write)
        assert status == 415
        status, _, body = request(addr, "POST", "/enroll?name=yellow", body=jpeg(COLOR_YELLOW, (24, 24)), headers=write)
        assert json.loads(body)["shots"] == 2
        status, _, body = request(addr, "GET", "/enroll")
        assert json.loads(body)["pending"] == {"yellow": 2} and json.loads(body)["enrolled"] == []
        sink.write(_frame(colour_image("yellow", rng), 1), _result(1), None)
        status, _, body = request(addr, "POST", "/enroll?name=yellow", headers=write)
        answer = json.loads(body)
        assert status == 200 and answer["enrolled"] is True and answer["in_bundle"] is False
        assert answer["saved_to"] == str((tmp_path / "state" / "bundle-enrolled").resolve())
        assert answer["labels"] == ["blue", "green", "red", "yellow"] and "run that bundle" in answer["message"]
        # the running classifier has it now; the read-only bundle is untouched, the copy has it
        assert clf(colour_image("yellow", rng)).label == "yellow" and sink.labels[-1] == "yellow"
        assert snapshot(bundle) == before and Classifier(tmp_path / "state" / "bundle-enrolled").enrolled == ("yellow",)
        status, _, body = request(addr, "GET", "/config")
        assert json.loads(body)["enroll"] is True
    finally:
        sink.close()


def test_http_enroll_is_off_on_an_open_network_address(tiny):
    from edgesight.edge.sinks import HttpSink
    from edgesight.edge.web.enroll import LiveEnroller
    from tests.edge.test_web import request

    sink = HttpSink("0.0.0.0", 0, insecure=True, enroll=LiveEnroller(Classifier(tiny)))
    try:
        status, _, body = request(("127.0.0.1", sink.address[1]), "POST", "/enroll?name=x", headers={"X-Edgesight": "1"})
        assert status == 403 and "without a token; give --http-token" in json.loads(body)["error"]
    finally:
        sink.close()


COLOR_YELLOW = (30, 210, 220)


def test_calibration_weighs_every_class_the_same_by_default(tiny):
    from edgesight.edge.model.enroll import calibrate

    clf = Classifier(tiny)
    ref, rng = clf._reference, np.random.default_rng(6)
    c = ref.centre()
    u = centred(np.stack([clf.embed(colour_image("yellow", rng)) for _ in range(5)]), c)
    assert calibrate(u, ref, c) == calibrate(u, ref, c, prior=1 / 4)  # 3 trained classes + the new one
    (a1, b1), (a2, b2) = calibrate(u, ref, c, prior=0.25), calibrate(u, ref, c, prior=0.75)
    assert -b2 / a2 < -b1 / a1  # weighing the new class more lowers the cosine it needs
