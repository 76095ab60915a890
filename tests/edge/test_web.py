"""The live view's endpoints over plain HTTP: POST /classify, the relabel moves and their
refusals, the capture images, the pages' files; and `edgesight serve` / `edgesight review`."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import pytest

from edgesight.edge.captures import LOG_FILE, read_records
from edgesight.edge.errors import EdgesightError
from edgesight.edge.frames import Frame, Result
from edgesight.edge.sinks import HttpSink
from edgesight.edge.web import CaptureFolder, RelabelError, bytes_classifier

BGR = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 30)}
JSON_WRITE = {"Content-Type": "application/json", "X-Edgesight": "1"}


def jpeg(colour, size=(48, 64)) -> bytes:
    img = np.empty((*size, 3), np.uint8)
    img[:] = colour
    return cv2.imencode(".jpg", img)[1].tobytes()


def make_capture_folder(root: Path) -> Path:
    """A capture folder as ``run --capture`` leaves it: two confident captures, two uncertain
    ones (a red frame taken for green, a blue one), their records, and a file from elsewhere."""
    captures = [("red", False, "red", 0.91), ("green", False, "green", 0.88), ("_uncertain", True, "green", 0.41),
                ("_uncertain", True, "blue", 0.45)]
    colours = ["red", "green", "red", "blue"]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOG_FILE, "a", encoding="utf-8") as log:
        for i, ((folder, uncertain, label, score), colour) in enumerate(zip(captures, colours)):
            name = f"20261130-1200{i:02d}-000-{i:08d}.jpg"
            (root / folder).mkdir(exist_ok=True)
            (root / folder / name).write_bytes(jpeg(BGR[colour]))
            log.write(json.dumps({"time": 1796040000.0 + i, "frame": i, "model_sha256": "ab" * 32, "label": label,
                                  "score": score, "top_k": [[label, score], ["red", 0.3]], "source": "synthetic",
                                  "file": f"{folder}/{name}", "reason": "uncertain" if uncertain else "label"}) + "\n")
    (root / "blue").mkdir(exist_ok=True)
    return root


def request(address: Tuple[str, int], method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def tree(root: Path):
    """Every path under ``root``, links not followed."""
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


def move(address, file, label, headers=None, query=""):
    status, _, body = request(address, "POST", "/review/move" + query, json.dumps({"file": file, "label": label}).encode(),
                              {**JSON_WRITE, **(headers or {})})
    return status, json.loads(body)


@pytest.fixture(scope="module")
def clf(color_bundle):
    from edgesight.edge.classifier import Classifier

    with Classifier(color_bundle) as c:
        yield c


@pytest.fixture
def live(clf, tmp_path):
    """A live view with /classify (64 KiB body cap) and a capture folder."""
    folder = make_capture_folder(tmp_path / "captures")
    sink = HttpSink(port=0, labels=clf.labels, captures=folder, max_body=64 * 1024,
                    classify=bytes_classifier(clf, own_interpreter=True, max_pixels=200_000))
    yield sink
    sink.close()


# --------------------------------------------------------------------------------- /classify


def test_classify_answers_the_label_of_a_posted_image(live):
    for colour in ("red", "blue"):
        status, headers, body = request(live.address, "POST", "/classify", jpeg(BGR[colour]), {"Content-Type": "image/jpeg"})
        out = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json", out
        assert out["label"] == colour and (out["width"], out["height"]) == (64, 48)
        assert [t["label"] for t in out["top_k"]][0] == colour and len(out["top_k"]) == 3 and out["latency_ms"] >= 0
    png = cv2.imencode(".png", np.full((30, 30, 3), BGR["green"], np.uint8))[1].tobytes()
    assert json.loads(request(live.address, "POST", "/classify", png)[2])["label"] == "green"


def test_classify_refuses_oversized_empty_and_non_image_bodies(live):
    def post(body, headers=None):
        status, h, raw = request(live.address, "POST", "/classify", body, headers)
        assert h["content-type"] == "application/json"
        return status, json.loads(raw)["error"]

    assert post(b"\xff" * (100 * 1024)) == (413, "the body is 102400 bytes, above the limit of 65536; send a smaller image")
    status, error = post(b"hello, not an image")
    assert status == 415 and error == "the request body: not a decodable image: send a JPEG, PNG, BMP or WebP file"
    assert post(b"")[0] == 400 and "the body is empty" in post(b"")[1]
    status, error = post(b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 415 and "not a form" in error
    big = cv2.imencode(".png", np.zeros((600, 600, 3), np.uint8))[1].tobytes()  # 0.36 MP, limit 0.2 MP
    status, error = post(big)
    assert status == 413 and "megapixels" in error and "--max-pixels" in error
    # a body announced above the cap is refused before it is sent
    conn = http.client.HTTPConnection(*live.address, timeout=5)
    conn.putrequest("POST", "/classify")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and r.getheader("Connection") == "close"
    conn.close()


def test_classify_is_absent_without_a_model():
    sink = HttpSink(port=0)
    try:
        status, _, body = request(sink.address, "POST", "/classify", jpeg(BGR["red"]))
        assert status == 404 and json.loads(body)["error"].startswith("not found: /classify")
        status, _, body = request(sink.address, "GET", "/review")
        assert status == 404 and "--capture DIR" in json.loads(body)["error"]
    finally:
        sink.close()


# ------------------------------------------------------------------------------ relabelling


def test_a_move_renames_the_file_and_appends_a_record(live):
    root = live.captures.root
    uncertain = sorted((root / "_uncertain").iterdir())
    status, record = move(live.address, f"_uncertain/{uncertain[0].name}", "red")
    assert status == 200
    assert record == {"file": f"red/{uncertain[0].name}", "relabelled": "red", "from": "green",
                      "old_file": f"_uncertain/{uncertain[0].name}", "time": record["time"]}
    assert not uncertain[0].exists() and (root / "red" / uncertain[0].name).is_file()
    assert read_records(root)[-1] == record
    # confirming a confident capture leaves it where it is and records it
    green = next((root / "green").iterdir())
    status, record = move(live.address, f"green/{green.name}", "green")
    assert status == 200 and record["file"] == record["old_file"] == f"green/{green.name}" and green.is_file()
    items = {item["file"]: item for item in live.captures.items()}
    assert items[f"red/{uncertain[0].name}"]["reviewed"] and items[f"red/{uncertain[0].name}"]["predicted"] == "green"
    assert not items[f"_uncertain/{uncertain[1].name}"]["reviewed"]
    # a name taken in the target folder is not overwritten
    (root / "blue" / uncertain[1].name).write_bytes(b"another")
    status, record = move(live.address, f"_uncertain/{uncertain[1].name}", "blue")
    assert status == 200 and record["file"] == f"blue/{uncertain[1].stem}-2.jpg"
    assert (root / "blue" / uncertain[1].name).read_bytes() == b"another"


def test_moves_outside_the_folder_or_to_unknown_labels_are_refused(live, tmp_path):
    root = live.captures.root
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(BGR["red"]))
    (root / "red" / "link.jpg").symlink_to(outside)
    (root / "elsewhere").symlink_to(tmp_path)
    before = (tree(root), (root / LOG_FILE).read_bytes())
    red = next(p.name for p in (root / "red").iterdir() if not p.is_symlink())
    for file, status, fragment in [
        ("../outside.jpg", 400, "no '..'"), ("/etc/passwd", 400, "expected FOLDER/NAME.jpg"),
        ("red/../../outside.jpg", 400, "expected FOLDER/NAME.jpg"), ("red/.hidden.jpg", 400, "nothing hidden"),
        ("red", 400, "expected FOLDER/NAME.jpg"), ("red/notes.txt", 400, "not an image name"),
        ("red/link.jpg", 400, "link"), ("elsewhere/outside.jpg", 400, "leaves"), ("red\\x.jpg", 400, "FOLDER/NAME.jpg"),
        ("red/missing.jpg", 404, "no such capture"), (None, 400, "FOLDER/NAME.jpg"),
    ]:
        got, body = move(live.address, file, "green")
        assert got == status and fragment in body["error"], (file, body)
    for label in ("purple", "_uncertain", "", None, ["red"]):
        got, body = move(live.address, f"red/{red}", label)
        assert got == 400 and "is not a class here; choose one of: blue, green, red" in body["error"], label
    assert (tree(root), (root / LOG_FILE).read_bytes()) == before


def test_moves_need_the_token_the_header_and_the_same_origin(clf, tmp_path):
    folder = make_capture_folder(tmp_path / "captures")
    sink = HttpSink(port=0, labels=clf.labels, captures=folder, token="s3cret")
    try:
        a, port = sink.address, sink.address[1]
        file = "red/" + next((folder / "red").iterdir()).name
        assert move(a, file, "green") == (401, {"error": "token required: add ?token=TOKEN to the address or send "
                                                        "Authorization: Bearer TOKEN"})
        assert move(a, file, "green", query="?token=wrong")[0] == 401
        assert move(a, file, "green", {"Host": f"evil.example:{port}"}, query="?token=s3cret")[0] == 403
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://localhost:{port + 1}"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            status, body = move(a, file, "green", headers, query="?token=s3cret")
            assert (status, body["error"]) == (403, "cross-origin request refused: post from the page this server serves"), headers
        status, _, body = request(a, "POST", "/review/move?token=s3cret", json.dumps({"file": file, "label": "green"}).encode(),
                                  {"Content-Type": "application/json"})
        assert status == 403 and "X-Edgesight: 1" in json.loads(body)["error"]
        status, _, body = request(a, "POST", "/review/move?token=s3cret", b"file=x", {"X-Edgesight": "1",
                                                                                     "Content-Type": "text/plain"})
        assert status == 415
        assert (folder / file).is_file() and len(read_records(folder)) == 4
        same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin", "Authorization": "Bearer s3cret"}
        status, record = move(a, file, "green", same)
        assert status == 200 and record["relabelled"] == "green" and not (folder / file).exists()
    finally:
        sink.close()


def test_moves_are_off_on_a_network_page_without_a_token(clf, tmp_path):
    # --http-insecure serves the page to the network without a token: anyone there may look,
    # but nobody may move files.
    folder = make_capture_folder(tmp_path / "captures")
    before = tree(folder)
    sink = HttpSink(host="0.0.0.0", port=0, labels=clf.labels, captures=folder, insecure=True)
    try:
        file = "red/" + next((folder / "red").iterdir()).name
        port = sink.address[1]
        status, body = move(("127.0.0.1", port), file, "green", {"Host": f"127.0.0.1:{port}"})
        assert (status, body) == (403, {"error": "changes are off on a page served to the network without a token; give --http-token"})
        assert tree(folder) == before and len(read_records(folder)) == 4
    finally:
        sink.close()


def test_capture_folder_learns_its_classes_and_says_when_it_cannot(tmp_path):
    folder = CaptureFolder(make_capture_folder(tmp_path / "c"))
    assert folder.labels == ["blue", "green", "red"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesightError, match="give --labels FILE .one class a line. or --bundle BUNDLE"):
        CaptureFolder(tmp_path / "empty")
    with pytest.raises(EdgesightError, match="not a folder; give the folder that run --capture wrote"):
        CaptureFolder(tmp_path / "nope")
    odd = CaptureFolder(tmp_path / "c", ["a/b", "red"])
    assert odd.folders == {"a/b": "a_b", "red": "red"}
    record = odd.relabel("red/" + next((tmp_path / "c" / "red").iterdir()).name, "a/b")
    assert record["file"].startswith("a_b/") and record["relabelled"] == "a/b" and (tmp_path / "c" / record["file"]).is_file()
    with pytest.raises(RelabelError) as e:
        odd.relabel(record["file"], "green")
    assert e.value.status == 400


# ----------------------------------------------------------------- images, history, pages


def test_capture_images_and_thumbnails_come_only_from_the_folder(live):
    root = live.captures.root
    name = "red/" + next((root / "red").iterdir()).name
    big = np.zeros((480, 640, 3), np.uint8)
    (root / "red" / "big.jpg").write_bytes(cv2.imencode(".jpg", big)[1].tobytes())
    status, headers, body = request(live.address, "GET", f"/capture?file={name}")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body == (root / name).read_bytes()
    status, headers, body = request(live.address, "GET", "/capture?file=red/big.jpg&thumb=1")
    thumb = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and thumb.shape == (240, 320, 3)
    for bad in ("../captures.jsonl", "captures.jsonl", "red/../../etc/passwd", "%2e%2e/x.jpg"):
        assert request(live.address, "GET", f"/capture?file={bad}")[0] == 400, bad
    status, _, body = request(live.address, "GET", "/captures/recent?limit=3")
    items = json.loads(body)["items"]
    assert status == 200 and [(i["label"], i["uncertain"]) for i in items] == [("blue", True), ("green", True), ("green", False)]


def test_history_keeps_label_changes_and_thins_the_rest(live):
    t = time.time()
    labels = ["red"] * 5 + ["green"] + ["red"] * 3
    for i, label in enumerate(labels):
        frame = Frame(np.zeros((24, 32, 3), np.uint8), i, time.monotonic(), t + i * 0.01)
        live.write(frame, Result(i, frame.timestamp, frame.wall_time, label, 0.9, [(label, 0.9)], 1.0), None)
    _, _, body = request(live.address, "GET", "/history?after=0")
    h = json.loads(body)
    assert h["labels"] == ["blue", "green", "red"]
    assert [(i["frame"], i["label"]) for i in h["items"]] == [(0, "red"), (5, "green"), (6, "red")]
    _, _, body = request(live.address, "GET", f"/history?after={h['items'][1]['seq']}")
    assert [i["frame"] for i in json.loads(body)["items"]] == [6]
    assert request(live.address, "GET", "/history?after=x")[0] == 400


def test_pages_carry_the_token_and_refuse_framing(clf, tmp_path):
    sink = HttpSink(port=0, labels=clf.labels, captures=make_capture_folder(tmp_path / "c"), token="t/k n")
    try:
        status, headers, page = request(sink.address, "GET", "/?token=t%2Fk%20n")
        assert status == 200 and b'src="/static/live.js?token=t%2Fk%20n"' in page
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self';" in headers["content-security-policy"] and headers["referrer-policy"] == "no-referrer"
        status, _, page = request(sink.address, "GET", "/review?token=t%2Fk%20n")
        assert status == 200 and b'src="/static/review.js?token=t%2Fk%20n"' in page
        assert request(sink.address, "GET", "/static/live.js")[0] == 401
        status, headers, js = request(sink.address, "GET", "/static/live.js?token=t%2Fk%20n")
        assert status == 200 and headers["content-type"].startswith("text/javascript") and b"/history" in js
        for bad in ("/static/../app.py", "/static/app.py", "/static/.hidden.js", "/static/nope.js"):
            assert request(sink.address, "GET", bad + "?token=t%2Fk%20n")[0] == 404, bad
        status, _, body = request(sink.address, "GET", "/config?token=t%2Fk%20n")
        config = json.loads(body)
        assert (config["captures"], config["classify"], config["labels"]) == (True, False, ["blue", "green", "red"])
    finally:
        sink.close()


def test_the_pages_reference_nothing_outside_the_device():
    from importlib import resources

    static = resources.files("edgesight.edge.web") / "static"
    names = sorted(p.name for p in static.iterdir())
    assert {"live.html", "live.js", "review.html", "review.js", "serve.html", "style.css", "common.js"} <= set(names)
    for name in names:
        text = (static / name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("http://HOST:PORT", "")), name


# -------------------------------------------------------------------------------- commands


class Server:
    """An `edgesight` web command in a subprocess; ``url`` from its start-up line."""

    def __init__(self, args, pattern: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "edgesight.cli", *map(str, args)], stderr=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("no start-up line: " + "".join(self.log))
            m = re.search(pattern, line)
            if m:
                self.url = m.group(1)
                break
        host, port = re.match(r"http://([\d.]+):(\d+)/", self.url).groups()
        self.address = (host, int(port))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def test_serve_command_classifies_posted_images_until_stopped(color_bundle):
    server = Server(["serve", color_bundle, "--http", "127.0.0.1:0", "--top-k", "2"], r"classifying at (http://\S+/)classify")
    try:
        status, _, body = request(server.address, "POST", "/classify", jpeg(BGR["green"]))
        out = json.loads(body)
        assert status == 200 and out["label"] == "green" and len(out["top_k"]) == 2
        status, _, body = request(server.address, "POST", "/classify", b"GIF89a not really")
        assert status == 415
        status, _, body = request(server.address, "GET", "/status")
        s = json.loads(body)
        assert s["classified"] == 1 and s["model"]["labels"] == ["blue", "green", "red"] and len(s["model"]["sha256"]) == 64
        assert request(server.address, "GET", "/", headers={"Host": "evil.example"})[0] == 403
    finally:
        assert server.stop() == 0


def test_serve_and_review_refuse_an_open_network_address_without_a_token(color_bundle, tmp_path, capsys, monkeypatch):
    from tests.conftest import run_cli

    monkeypatch.delenv("EDGESIGHT_HTTP_TOKEN", raising=False)
    code, _, err = run_cli(["serve", color_bundle, "--http", "0.0.0.0:0"], capsys)
    assert code == 1 and "--http 0.0.0.0: serving the camera to the network without a token" in err
    folder = make_capture_folder(tmp_path / "c")
    code, _, err = run_cli(["review", folder, "--http", "0.0.0.0:0"], capsys)
    assert code == 1 and "without a token" in err
    code, _, err = run_cli(["review", folder, "--labels", color_bundle / "labels.txt", "--bundle", color_bundle], capsys)
    assert code == 1 and err.strip() == "error: --labels and --bundle both name the classes; give one"
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["review", tmp_path / "empty"], capsys)
    assert code == 1 and "give --labels FILE (one class a line) or --bundle BUNDLE" in err
