"""The fleet view under load: 50 simulated devices publishing at 10 Hz to one mosquitto.

    python -m benchmarks.fleet_watch                          # 50 devices, 10 Hz, 30 s
    python -m benchmarks.fleet_watch --devices 100 --hz 10    # more

The devices are ``--devices`` MQTT sinks of ``edgesight run`` (:class:`~edgesight.edge.sinks.MqttSink`,
QoS 0) in this process, each fed a result every 1/``--hz`` s (its label changing now and then)
and the loop's statistics every second, so each publishes ``result`` at ``--hz``, ``stats`` at
1 Hz, ``label`` on changes and its retained ``status`` and ``info``. ``edgesight fleet watch``
runs in a process of its own (``--quiet --json``) with the page off. Recorded: the messages the
devices published and the watcher handled (per second, and the share of the published), the
devices it shows live at the end, and the CPU time of the watcher, the devices' process and
mosquitto over the publishing time (one core = 100 %). The machine is shared: the CPU figures
are of this run, the message rate is what matters.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from benchmarks.common import machine, save_result, update_readme_table

PREFIX = "bench"
LABELS = ["ok", "defect", "empty"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(devices: int, hz: float, seconds: float) -> Dict[str, Any]:
    from edgesight.edge.frames import Frame, Result
    from edgesight.edge.sinks import MqttSink

    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if mosquitto is None:
        raise SystemExit("mosquitto is not installed: apt-get install mosquitto")
    work = Path(tempfile.mkdtemp(prefix="edgesight-fleet-bench-"))
    port = _free_port()
    (work / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nuser {getpass.getuser()}\n")
    broker = subprocess.Popen([mosquitto, "-c", str(work / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    url = f"mqtt://127.0.0.1:{port}/{PREFIX}"
    watcher = subprocess.Popen([sys.executable, "-m", "edgesight.cli", "fleet", "watch", url, "--quiet", "--stale", "5",
                                "--duration", str(seconds + 8), "--json", str(work / "fleet.json")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # the watcher's import and subscription
    # One client id each (the default names the process, which all of them share here).
    sinks = [MqttSink(f"{url}/cam{i:03d}", client_id=f"edgesight-bench-cam{i:03d}", info={"release": f"{i:016x}", "host": f"cam{i:03d}"})
             for i in range(devices)]
    for s in sinks:
        s.wait_connected(10)
    image = np.zeros((8, 8, 3), np.uint8)
    rng = np.random.default_rng(0)
    labels = [LABELS[0]] * devices
    cpu0 = {"watcher": _cpu_seconds(watcher.pid), "devices": _cpu_seconds(os.getpid()), "broker": _cpu_seconds(broker.pid)}
    t0 = time.monotonic()
    tick, n = 1.0 / hz, 0
    frames = 0
    while time.monotonic() - t0 < seconds:
        now = time.time()
        for i, s in enumerate(sinks):
            if rng.random() < 0.02:
                labels[i] = LABELS[int(rng.integers(len(LABELS)))]
            result = Result(frame_index=n, timestamp=time.monotonic(), wall_time=now, label=labels[i], score=0.9,
                            top_k=[(labels[i], 0.9)], latency_ms=2.0)
            s.write(Frame(image, n, time.monotonic(), now), result, None)
        n += 1
        frames += devices
        if n % int(hz) == 0:
            for i, s in enumerate(sinks):
                s.update_stats({"frames": n, "seconds": n / hz, "fps": hz, "dropped": 0, "latency_ms": {"p50": 2.0}, "label": labels[i]})
        time.sleep(max(0.0, t0 + n * tick - time.monotonic()))
    elapsed = time.monotonic() - t0
    cpu1 = {"watcher": _cpu_seconds(watcher.pid), "devices": _cpu_seconds(os.getpid()), "broker": _cpu_seconds(broker.pid)}
    published = sum(s.published for s in sinks)
    dropped = sum(s.dropped for s in sinks)
    for s in sinks:
        s.close()
    err = watcher.communicate(timeout=60)[1]
    broker.terminate()
    broker.wait(10)
    snap = json.loads((work / "fleet.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    if watcher.returncode != 0:
        raise SystemExit(f"the watcher failed: {err}")
    handled = snap["messages"]
    # Besides the counted results, labels and statistics, each device announced itself (status
    # "online" and info, retained) when it connected and said "offline" when it closed.
    sent = published + 3 * devices
    watcher_cpu = cpu1["watcher"] - cpu0["watcher"]
    return {
        "devices": devices, "hz": hz, "seconds": round(elapsed, 1), "results_written": frames,
        "published": sent, "dropped_by_devices": dropped, "handled_by_watcher": handled,
        "handled_share": round(handled / sent, 4) if sent else None,
        "messages_per_s": round(handled / elapsed, 1),
        "watcher_cpu_us_per_message": round(1e6 * watcher_cpu / handled, 1) if handled else None,
        "live_at_end": snap["live"], "shown": len(snap["devices"]),
        "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / elapsed, 1) for k in cpu0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    figures = run(a.devices, a.hz, a.seconds)
    result = {"machine": machine(), "command": "python -m benchmarks.fleet_watch " + " ".join(sys.argv[1:]), **figures}
    save_result("fleet_watch", result)
    c = figures["cpu_percent"]
    update_readme_table(
        "fleet_watch",
        ["devices x rate", "published", "handled by the watcher", "messages/s handled", "devices shown live",
         "watcher CPU (per message)", "devices' process CPU", "mosquitto CPU"],
        [[f"{a.devices} x {a.hz:g} Hz for {figures['seconds']} s", figures["published"],
          f"{figures['handled_by_watcher']} ({100 * figures['handled_share']:.1f} %)", figures["messages_per_s"],
          f"{figures['live_at_end']} of {figures['shown']}", f"{c['watcher']} % ({figures['watcher_cpu_us_per_message']} µs)",
          f"{c['devices']} %", f"{c['broker']} %"]],
        note=f"{machine()['cores']} shared cores; one core = 100 %; `{result['command'].strip()}`",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
