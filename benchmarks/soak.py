"""Soak: a long run under injected faults, checked for lost results and for memory growth.

    python -m benchmarks.soak                       # 100,000 results, about 4 minutes on 2 cores
    python -m benchmarks.soak --live                # the same with camera-mode outputs
    python -m benchmarks.soak --frames 20000        # a shorter look

The run is the camera loop of ``edgesight run BUNDLE --jsonl FILE --mqtt URL --mqtt-qos 1
--quiet``, driven through the Python API (``Classifier``, ``RunConfig``, the outputs ``run``
makes for those flags, ``run_loop``) so that faults can be put in:

* the source: synthetic 320x240 frames paced like a camera (``--fps``) whose capture fails every
  ``--fail-every`` frames (alternately a failed read and a driver exception); the live reader
  closes it and reconnects with its default back-off, and after every third failure the first
  attempt to reopen fails too;
* the outputs: besides the JSONL file and MQTT, extra outputs raise an exception at results
  spread over the run (``--output-faults``); each runs behind its queue like ``run``'s outputs,
  so its first failure disables it and the loop carries on;
* the broker: a real mosquitto (with persistence) is stopped for ``--outage`` seconds every
  ``--restart-every`` results, then started again.

By default the camera is read as a record (as the loop reads a file): every result goes to
every output, and an output that falls behind holds the loop back. 500 FPS compresses an hour
of a 30 FPS camera into minutes; the 8-result queue of each output, 270 ms at 30 FPS, is 16 ms
at 500 FPS. ``--live`` reads it as a camera instead: an output that falls behind drops its
oldest waiting results, counted in the statistics.

Recorded: the results the loop produced ("frames in"), the lines of the JSONL file and the
distinct results a QoS 1 subscriber (a persistent session, in a process of its own) received
("results out"; they must equal frames in, less the counted drops with ``--live``), reconnects,
broker restarts, the resident memory (RSS) of the process every 10,000 results, and whether its
growth from 20,000 results to the end stays under 5 MB. Results go to ``results/soak.json``
(``soak_live.json`` with ``--live``) and a table in ``benchmarks/README.md``. The bundle is a
small cnn_small model (32x32 input) trained and converted once with the ``edgesight`` CLI under
``benchmarks/work/soak/`` and reused after.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks.common import ROOT, machine, run_edgesight, save_result, update_readme_table

WORK = ROOT / "work" / "soak"
RSS_EVERY = 10_000
RSS_FROM = 20_000
RSS_LIMIT_MB = 5.0
TOPIC = "soak"


def rss_mb() -> float:
    """The resident set size of this process now, in MB (from /proc; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise SystemExit("soak: /proc/self/status has no VmRSS (Linux only)")


def make_bundle(work: Path) -> Path:
    """A small int8 cnn_small bundle, made with the CLI once and reused."""
    bundle = work / "bundle"
    if (bundle / "model.json").exists():
        return bundle
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    data, run = work / "data", work / "run"
    print("building the soak bundle (synthetic shapes, cnn_small 32x32, 3 epochs) ...", flush=True)
    if not data.exists():
        run_edgesight(["datasets", "synth", str(data), "--kind", "shapes", "--per-class", "60", "--size", "48"], log)
    if not (run / "metrics.json").exists():
        run_edgesight(["train", str(data), "--out", str(run), "--model", "cnn_small", "--img-size", "32", "--epochs", "3",
                       "--seed", "0"], log)
    run_edgesight(["convert", str(run), "--out", str(bundle), "--quant", "int8", "--max-drop", "100"], log)
    if not (bundle / "model.json").exists():
        raise SystemExit(f"soak: the bundle was not written; see {log}")
    return bundle


# ---------------------------------------------------------------------------- the broker

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto on a free localhost port, with persistence so sessions survive a restart."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if exe is None:
            raise SystemExit("soak: the mosquitto broker is not installed (apt install mosquitto)")
        self.exe, self.port, self.workdir = exe, free_port(), workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {workdir / 'data'}/\nuser {getpass.getuser()}\n"
                             "max_queued_messages 0\n")
        self.proc: Optional[subprocess.Popen] = None
        self.restarts = 0

    def start(self) -> None:
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"soak: mosquitto exited; see {self.workdir / 'mosquitto.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"soak: mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # mosquitto saves its sessions and queued messages on SIGTERM
            self.proc.wait(10)

    def restart(self, outage_s: float) -> None:
        self.stop()
        time.sleep(outage_s)
        self.start()
        self.restarts += 1


# ---------------------------------------------------------------------------- the subscriber

def subscriber_main(port: int, topic: str, out: Path) -> None:
    """A QoS 1 subscriber with a persistent session: counts results and distinct frames, writing
    them to ``out`` twice a second and once more on SIGTERM."""
    import paho.mqtt.client as mqtt

    seen: set = set()
    counts = {"messages": 0, "frames": 0, "connects": 0}
    lock = threading.Lock()

    def on_message(c, u, msg) -> None:
        frame = json.loads(msg.payload)["frame"]
        with lock:
            counts["messages"] += 1
            seen.add(frame)
            counts["frames"] = len(seen)

    def on_connect(c, u, f, rc, p) -> None:
        counts["connects"] += 1
        c.subscribe(topic, qos=1)

    def dump() -> None:
        with lock:
            data = json.dumps(counts)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(data)
        os.replace(tmp, out)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgesight-soak-subscriber", clean_session=False)
    client.on_connect, client.on_message = on_connect, on_message
    client.reconnect_delay_set(0.2, 1)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    while not done.wait(0.5):
        dump()
    client.disconnect()
    client.loop_stop()
    dump()


class Subscriber:
    """:func:`subscriber_main` in a process of its own, so its memory is not the run's."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.out = workdir / "subscriber.json"
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.soak", "--subscriber", str(port), f"{TOPIC}/result",
                                      str(self.out)], cwd=ROOT.parent)
        deadline = time.monotonic() + 20
        while not (self.out.exists() and self.counts()["connects"]):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit("soak: the MQTT subscriber did not connect")
            time.sleep(0.1)

    def counts(self) -> Dict[str, int]:
        return json.loads(self.out.read_text()) if self.out.exists() else {"messages": 0, "frames": 0, "connects": 0}

    def wait_for(self, frames: int, quiet_s: float = 10.0, limit_s: float = 120.0) -> Dict[str, int]:
        """Wait until ``frames`` distinct results arrived, or nothing new came for ``quiet_s``."""
        last, changed, start = None, time.monotonic(), time.monotonic()
        while time.monotonic() - start < limit_s:
            now = self.counts()
            if now["frames"] >= frames:
                break
            if now != last:
                last, changed = now, time.monotonic()
            elif time.monotonic() - changed > quiet_s:
                break
            time.sleep(0.2)
        self.stop()
        return self.counts()

    def stop(self) -> None:
        """End the process; it writes its final counts first."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------- faults

class FlakyCamera:
    """Synthetic frames paced at ``fps`` whose capture fails every ``fail_every`` frames
    (alternately a read that returns nothing and a driver exception); after every third failure
    the first attempt to reopen fails too. A :class:`~edgesight.edge.sources.base.CaptureDevice`."""

    def __init__(self, width: int, height: int, fps: float, fail_every: int) -> None:
        from edgesight.edge.sources.synthetic import SyntheticPattern

        self.pattern = SyntheticPattern(width, height)
        self.name = f"flaky synthetic {width}x{height}@{fps:g}"
        self.period, self.fail_every = 1.0 / fps, fail_every
        self.index = 0
        self.failures = self.failed_opens = 0
        self._failed_at = 0
        self._refuse_next_open = False
        self._next: Optional[float] = None

    def open(self) -> None:
        from edgesight.edge.errors import SourceError

        if self._refuse_next_open:
            self._refuse_next_open = False
            self.failed_opens += 1
            raise SourceError(f"{self.name}: not ready yet (injected)")
        self._next = time.monotonic()

    def grab(self, stop: threading.Event):
        from edgesight.edge.sources.base import Grab

        if self._next is None:
            return None
        now = time.monotonic()
        if self._next > now and stop.wait(self._next - now):
            return None
        # a consumer that fell behind does not get a burst of overdue frames, as with a camera
        self._next = max(self._next + self.period, time.monotonic() - self.period)
        if self.index and self.index % self.fail_every == 0 and self._failed_at != self.index:
            self._failed_at = self.index
            self.failures += 1
            self._refuse_next_open = self.failures % 3 == 0
            if self.failures % 2:
                return None  # a read that returned nothing
            raise OSError(f"{self.name}: device disconnected (injected)")
        image = self.pattern.render(self.index)
        self.index += 1
        return Grab(image)

    def close(self) -> None:
        self._next = None


class ReadAsARecord:
    """The camera read as a record: ``live`` is False, so the loop hands every result to every
    output, waiting for one that falls behind, as it does for a file; capturing, failing and
    reconnecting stay the camera's. Without it (``--live``) the outputs behave as on a camera,
    where one that falls behind drops its oldest waiting results (counted)."""

    live = False

    def __init__(self, reader) -> None:
        self.reader = reader

    def read(self):
        return self.reader.read()

    def close(self) -> None:
        self.reader.close()

    def __getattr__(self, name: str):
        return getattr(self.reader, name)  # captured, dropped, reconnects


def flaky_output(fail_at: int):
    """An output that raises at its ``fail_at``-th result (and would again, were it not disabled)."""
    from edgesight.edge.sinks import Sink

    class FlakyOutput(Sink):
        def __init__(self) -> None:
            self.seen = 0

        def write(self, frame, result, annotated) -> None:
            self.seen += 1
            if self.seen >= fail_at:
                raise RuntimeError(f"output failed at result {self.seen} (injected)")

    return FlakyOutput()


# ---------------------------------------------------------------------------- the run

def soak(a: argparse.Namespace, bundle: Path, workdir: Path) -> Dict[str, Any]:
    """Start the broker and the subscriber, run, and stop them whatever happened."""
    broker = Broker(workdir / "broker")
    broker.start()
    try:
        subscriber = Subscriber(broker.port, workdir)
        try:
            return _run(a, bundle, workdir, broker, subscriber)
        finally:
            subscriber.stop()
    finally:
        broker.stop()


def _run(a: argparse.Namespace, bundle: Path, workdir: Path, broker: Broker, subscriber: Subscriber) -> Dict[str, Any]:
    from edgesight.edge.classifier import Classifier
    from edgesight.edge.loop.config import RunConfig
    from edgesight.edge.loop.runner import StopFlag, run_loop, signals_stop
    from edgesight.edge.loop.session import make_sinks
    from edgesight.edge.sinks import AsyncSink, JsonlSink, MqttSink
    from edgesight.edge.sources.base import LatestFrameReader

    jsonl = workdir / "results.jsonl"
    cfg = RunConfig(source="synthetic", jsonl=str(jsonl), mqtt=f"mqtt://127.0.0.1:{broker.port}/{TOPIC}", mqtt_qos=1,
                    quiet=True, max_frames=a.frames, stats_interval=a.stats_interval, threads=1)
    clf = Classifier(bundle, threads=cfg.threads)
    camera = FlakyCamera(320, 240, a.fps, a.fail_every)
    reader = LatestFrameReader(camera)  # open_source's defaults for a camera: 0.5 s back-off, 30 s read timeout
    source = reader if a.live else ReadAsARecord(reader)
    sinks = make_sinks(cfg)
    fault_at = [round(a.frames * (i + 1) / (a.output_faults + 1)) for i in range(a.output_faults)]
    flaky = [AsyncSink(flaky_output(n), name=f"flaky-{i + 1}") for i, n in enumerate(fault_at)]
    restarts_at = set(range(a.restart_every, a.frames, a.restart_every))
    rss: List[Dict[str, float]] = [{"frames": 0, "rss_mb": round(rss_mb(), 2)}]
    outages: List[threading.Thread] = []

    def on_result(result, stats) -> None:
        n = stats.frames
        if n % RSS_EVERY == 0:
            rss.append({"frames": n, "rss_mb": round(rss_mb(), 2)})
            print(f"{n} frames, RSS {rss[-1]['rss_mb']:.1f} MB, reconnects {source.reconnects}, broker restarts "
                  f"{broker.restarts}", flush=True)
        if n in restarts_at:
            t = threading.Thread(target=broker.restart, args=(a.outage,), name="soak-broker-restart")
            t.start()
            outages.append(t)

    t0 = time.monotonic()
    stats = None
    try:
        with signals_stop(StopFlag()) as stop:
            stats = run_loop(clf.model, clf.info, source, [*sinks, *flaky], cfg, stop, on_result=on_result,
                             printer=lambda line: print(line, flush=True))
    finally:
        source.close()
        for t in outages:
            t.join()
        # Every output writes what it holds; MQTT until the broker has acknowledged every result.
        mqtt_async = next(s for s in sinks if isinstance(s.inner, MqttSink))
        mqtt_sink = mqtt_async.sink
        deadline = time.monotonic() + 60
        while stats and mqtt_async.written + mqtt_async.dropped < stats.frames and time.monotonic() < deadline:
            time.sleep(0.05)
        mqtt_sink.wait_connected(30)
        mqtt_sink.flush(60)
        for s in [*sinks, *flaky]:
            s.close()
    seconds = time.monotonic() - t0
    received = subscriber.wait_for(stats.frames)
    lines = jsonl.read_text().splitlines()
    jsonl_frames = {json.loads(line)["frame"] for line in lines}
    growth = rss[-1]["rss_mb"] - next(r["rss_mb"] for r in rss if r["frames"] == RSS_FROM) if stats.frames >= RSS_FROM else None
    jsonl_async = next(s for s in sinks if isinstance(s.inner, JsonlSink))
    out = {
        "frames_in": stats.frames,
        "seconds": round(seconds, 1),
        "fps": round(stats.frames / seconds, 1),
        "source": {"captured": source.captured, "not_taken_by_the_loop": source.dropped, "capture_failures": camera.failures,
                   "reconnects": source.reconnects, "failed_reopen_attempts": camera.failed_opens},
        "outputs": {
            "jsonl": {"results_out": len(lines), "distinct_frames": len(jsonl_frames), "queue_dropped": jsonl_async.dropped},
            "mqtt_qos1": {"results_out": received["frames"], "messages_received": received["messages"],
                          "redelivered": received["messages"] - received["frames"], "subscriber_connects": received["connects"],
                          "published": mqtt_sink.published, "dropped": mqtt_sink.dropped, "queue_dropped": mqtt_async.dropped},
            "flaky": [{"name": s.name, "fails_at_result": n, "disabled": s.disabled, "written": s.written,
                       "error": str(s.error) if s.error else None} for s, n in zip(flaky, fault_at)],
        },
        "broker_restarts": broker.restarts,
        "rss_mb": rss,
        "rss_growth_mb_from_20k": round(growth, 2) if growth is not None else None,
    }
    # Read as a record, each lossless output gives back every result; read live, an output that
    # fell behind dropped its oldest waiting results, and those must all be counted.
    jsonl_lost = 0 if not a.live else jsonl_async.dropped
    mqtt_lost = 0 if not a.live else mqtt_async.dropped + mqtt_sink.dropped
    out["checks"] = {
        "jsonl_equals_frames_in" + ("_less_counted_drops" if a.live else ""):
            len(lines) == len(jsonl_frames) == stats.frames - jsonl_lost,
        "mqtt_equals_frames_in" + ("_less_counted_drops" if a.live else ""): received["frames"] == stats.frames - mqtt_lost,
        "reconnected_after_every_failure": source.reconnects == camera.failures,
        "every_faulty_output_disabled_alone": all(s.disabled for s in flaky),
        "rss_growth_under_5_mb": growth is not None and growth < RSS_LIMIT_MB,
    }
    out["passed"] = all(out["checks"].values())
    return out


def _row(r: Dict[str, Any]) -> List[Any]:
    o, growth = r["outputs"], r["rss_growth_mb_from_20k"]
    at_20k = next((x["rss_mb"] for x in r["rss_mb"] if x["frames"] == RSS_FROM), None)
    mqtt = o["mqtt_qos1"]
    return [
        f"`{r['command']}`", "live: behind, drop (counted)" if r["settings"]["live"] else "record: every result",
        f"{r['frames_in']:,}", f"{o['jsonl']['results_out']:,}", f"{mqtt['results_out']:,} ({mqtt['redelivered']})",
        f"{o['jsonl']['queue_dropped']} / {mqtt['queue_dropped'] + mqtt['dropped']}",
        f"{r['source']['capture_failures']} / {r['source']['reconnects']}", r["broker_restarts"],
        f"{sum(f['disabled'] for f in o['flaky'])} of {len(o['flaky'])}",
        f"{at_20k:.1f} → {r['rss_mb'][-1]['rss_mb']:.1f} MB" if at_20k is not None else "-",
        f"{growth:+.2f} MB" if growth is not None else "-", "yes" if r["passed"] else "**no**",
    ]


def write_table() -> None:
    """The README table: one row per mode that has a result."""
    from benchmarks.common import RESULTS, load_result

    runs = [load_result(name) for name in ("soak", "soak_live") if (RESULTS / f"{name}.json").exists()]
    m = runs[0]["machine"]
    update_readme_table(
        "soak",
        ["command", "outputs", "frames in", "JSONL lines", "MQTT QoS 1 results (redelivered)",
         "dropped by JSONL / MQTT (counted)", "source failures / reconnects", "broker restarts", "faulty outputs disabled",
         "RSS at 20k → end", "growth", "passed"],
        [_row(r) for r in runs],
        note=f"On {m['cpu']} ({m['cores']} cores), " + "; ".join(
            f"{r['machine']['date']}: {r['seconds']:.0f} s at {r['fps']:.0f} results/s" for r in runs)
             + f", from a {runs[0]['settings']['fps']:g} FPS 320x240 synthetic camera. Passed: every lossless output gave "
             "back every result (live: every result less those counted as dropped), every failure reconnected, every "
             "faulty output was disabled alone, and RSS grew less than 5 MB from 20,000 results to the end.",
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--subscriber":
        subscriber_main(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="results to produce (at least 20,000 for the RSS check)")
    ap.add_argument("--fps", type=float, default=500.0, help="the synthetic camera's frame rate")
    ap.add_argument("--fail-every", type=int, default=5_000, help="captured frames between source failures")
    ap.add_argument("--restart-every", type=int, default=25_000, help="results between broker restarts")
    ap.add_argument("--outage", type=float, default=3.0, help="seconds the broker stays down at each restart")
    ap.add_argument("--output-faults", type=int, default=4, help="extra outputs, each raising once, spread over the run")
    ap.add_argument("--stats-interval", type=float, default=30.0, help="seconds between the loop's statistics lines")
    ap.add_argument("--live", action="store_true", help="read the camera live: outputs that fall behind drop their oldest "
                    "waiting results (counted) instead of holding the loop back")
    ap.add_argument("--bundle", type=Path, help="use this bundle instead of building one")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bundle = a.bundle or make_bundle(WORK)
    workdir = WORK / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    r = soak(a, bundle, workdir)
    m = machine()
    command = " ".join(["python -m benchmarks.soak", *sys.argv[1:]])
    result = {"benchmark": "soak", "machine": m, "command": command,
              "settings": {"frames": a.frames, "fps": a.fps, "live": a.live, "frame_size": [320, 240], "fail_every": a.fail_every,
                           "restart_every": a.restart_every, "outage_s": a.outage, "output_faults": a.output_faults,
                           "model": "cnn_small int8, 32x32 input"},
              **r}
    save_result("soak_live" if a.live else "soak", result)
    write_table()
    print(json.dumps({k: r[k] for k in ("frames_in", "seconds", "source", "broker_restarts", "rss_growth_mb_from_20k", "checks",
                                         "passed")}, indent=2))
    if not r["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
