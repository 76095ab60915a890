"""`edgesight fleet watch`: the table's bookkeeping, and three `edgesight run` devices publishing
to a real mosquitto, one of them stopped mid-test and shown as stale."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgesight.edge.errors import ConfigError
from edgesight.edge.fleet.watch import FleetState, format_table

from .test_sinks import broker, free_port, needs_broker  # noqa: F401  (broker: fixture)

EDGESIGHT = str(Path(sys.executable).parent / "edgesight")
RELEASE = "0123456789abcdef"


# --------------------------------------------------------------------------------------------
# The bookkeeping, without a broker


def _result(label: str, t: float) -> bytes:
    return json.dumps({"time": t, "frame": 1, "label": label, "score": 0.9, "top_k": [], "latency_ms": 1.0}).encode()


def test_state_rows_rates_drift_release_and_staleness():
    state = FleetState("plant", stale=5, window=10)
    t0 = 1000.0
    for i in range(20):  # cam1: 2 results a second, three in four 'ok'
        state.ingest("plant/line1/cam1/result", _result("reject" if i % 4 == 3 else "ok", t0 + i / 2), now=t0 + i / 2)
    state.ingest("plant/line1/cam1/stats", json.dumps({"time": t0 + 9.5, "fps": 9.8, "frames": 98}).encode(), now=t0 + 9.5)
    state.ingest("plant/line1/cam1/info", json.dumps({"release": RELEASE}).encode(), retained=True, now=t0 + 9.5)
    state.ingest("plant/line1/cam1/status", b"online", retained=True, now=t0 + 9.5)
    drift = {"alert": True, "reasons": ["brightness -2.9 sd"], "psi_classes": 0.7}
    state.ingest("plant/line1/cam1/drift", json.dumps(drift).encode(), retained=True, now=t0 + 9.5)
    # cam2: only old retained messages (it died long ago): stale from the start, offline.
    state.ingest("plant/cam2/stats", json.dumps({"time": t0 - 600, "fps": 10}).encode(), retained=True, now=t0 + 9.5)
    state.ingest("plant/cam2/status", b"offline", retained=True, now=t0 + 9.5)
    # Not a device topic, or not JSON: counted as ignored, no device made.
    assert not state.ingest("elsewhere/cam3/result", _result("ok", t0), now=t0)
    assert not state.ingest("plant/cam3/result", b"{oops", now=t0)
    assert not state.ingest("plant/cam3/unknownkind", b"1", now=t0)

    rows = {r["device"]: r for r in state.rows(now=t0 + 10)}
    assert set(rows) == {"line1/cam1", "cam2"}
    cam1 = rows["line1/cam1"]
    assert cam1["state"] == "live" and cam1["mqtt"] == "online" and cam1["fps"] == 9.8 and cam1["release"] == RELEASE
    assert cam1["label"] == "reject" and cam1["rates"] == {"ok": 1.5, "reject": 0.5}
    assert cam1["drift"] == "ALERT: brightness -2.9 sd" and cam1["drift_alert"]
    cam2 = rows["cam2"]
    assert cam2["state"] == "stale" and cam2["mqtt"] == "offline" and cam2["age"] == pytest.approx(610)
    # Without fresh statistics, the fps is the rate of results; past the stale time, stale.
    later = {r["device"]: r for r in state.rows(now=t0 + 16)}["line1/cam1"]
    assert later["state"] == "stale" and later["fps"] == pytest.approx(0.8)  # 8 results in the last 10 s

    snap = state.snapshot(now=t0 + 10)
    assert (snap["live"], snap["stale"], snap["alerts"], snap["messages"], snap["ignored"]) == (1, 1, 1, 26, 3)
    table = format_table(snap)
    assert "plant/#: 2 devices, 1 live, 1 stale" in table
    assert any(line.split()[:3] == ["line1/cam1", "live", "online"] and "ok 1.5, reject 0.5" in line for line in table.splitlines())
    with pytest.raises(ConfigError, match="--stale and --window"):
        FleetState("plant", stale=0)


# --------------------------------------------------------------------------------------------
# Three devices on a real broker


def _get(url: str, host: str = "") -> tuple:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


@needs_broker
@pytest.mark.slow
def test_three_devices_live_then_one_stale(broker, color_bundle, tmp_path):
    # cam1 runs its model from a deploy release folder: the table shows that release.
    released = tmp_path / "opt" / "releases" / RELEASE / "model"
    shutil.copytree(color_bundle, released)
    models = {"cam1": released, "cam2": color_bundle, "cam3": color_bundle}
    base = f"mqtt://127.0.0.1:{broker.port}/plant"
    devices = {}
    for name, model in models.items():
        devices[name] = subprocess.Popen([EDGESIGHT, "run", str(model), "--source", "synthetic:64x48@10", "--mqtt", f"{base}/{name}",
                                          "--stats-interval", "0.5", "--quiet", "--headless"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = free_port()
    token = "fleet-secret"
    table_log, err_log = tmp_path / "watch.out", tmp_path / "watch.err"
    with open(table_log, "wb") as out, open(err_log, "wb") as err:
        watcher = subprocess.Popen([EDGESIGHT, "fleet", "watch", base, "--stale", "3", "--interval", "0.5", "--json", str(tmp_path / "last.json"),
                                    "--http", f"127.0.0.1:{port}", "--http-token", token], stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        def fleet():
            try:
                code, body = _get(f"{url}/fleet.json?token={token}")
            except OSError:
                return None
            return json.loads(body) if code == 200 else None

        def all_live():
            snap = fleet()
            return snap if snap and snap["live"] == 3 and all(d["fps"] and d["fps"] > 5 for d in snap["devices"]) else None

        snap = _wait_for(all_live, 60, "three live devices")
        rows = {d["device"]: d for d in snap["devices"]}
        assert set(rows) == {"cam1", "cam2", "cam3"}
        assert all(r["mqtt"] == "online" and r["label"] in ("red", "green", "blue") and r["rates"] for r in rows.values())
        assert rows["cam1"]["release"] == RELEASE and rows["cam2"]["release"] is None
        # The page follows the live view's rules: its token, and a Host naming it.
        assert _get(f"{url}/fleet.json")[0] == 401
        assert _get(f"{url}/fleet.json?token={token}", host="evil.example")[0] == 403
        code, page = _get(f"{url}/?token={token}")
        assert code == 200 and b"edgesight fleet" in page and b"/static/fleet.js?token=" in page

        # cam2 stops mid-test: after --stale seconds without a message it shows as stale.
        devices["cam2"].send_signal(signal.SIGTERM)
        devices["cam2"].wait(15)
        snap = _wait_for(lambda: (lambda s: s if s and s["stale"] == 1 else None)(fleet()), 15, "cam2 to go stale")
        rows = {d["device"]: d for d in snap["devices"]}
        assert rows["cam2"]["state"] == "stale" and rows["cam2"]["mqtt"] == "offline" and rows["cam2"]["age"] >= 3
        assert rows["cam1"]["state"] == rows["cam3"]["state"] == "live"
    finally:
        for p in devices.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(15) == 0, err_log.read_text()
        for p in devices.values():
            p.wait(15)
    # The terminal showed the same table; the last one was also written as JSON.
    lines = table_log.read_text().splitlines()
    assert any(line.split()[:2] == ["cam2", "stale"] for line in lines)
    assert any(line.split()[:3] == ["cam1", "live", "online"] and RELEASE in line for line in lines)
    last = json.loads((tmp_path / "last.json").read_text())
    assert {d["device"] for d in last["devices"]} == {"cam1", "cam2", "cam3"}
    assert token not in err_log.read_text() and token not in table_log.read_text()
