"""`edgesight train --strategy multiworker`: TF_CONFIG, and two real worker processes on 127.0.0.1.

The two-worker run trains the colour dataset like a one-worker run with the same options: the
global batch is twice the per-worker one and the learning rate twice --lr (the linear scaling
rule), so the accuracy is compared within a tolerance, not bit for bit: at most two of the 15
test images apart, and both runs at least 80 %.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesight.edge.errors import ConfigError
from edgesight.training.cluster import ClusterSpec, fingerprint, read_tf_config, reassemble, shard
from tests.conftest import write_color_dataset

EDGESIGHT = str(Path(sys.executable).parent / "edgesight")
OPTIONS = ["--model", "cnn_small", "--img-size", "16", "--alpha", "0.5", "--epochs", "8", "--batch-size", "8", "--lr", "5e-3",
           "--augment", "none", "--early-stopping", "0", "--seed", "1"]
TOLERANCE = 2 / 15


def _free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def _start_workers(data: Path, out: Path, logs: Path, *extra: str) -> list:
    """Two `edgesight train` processes, one per TF_CONFIG task; worker 1's TMPDIR is logs/tmp1."""
    ports = _free_ports(2)
    procs = []
    for i in range(2):
        tmp = logs / f"tmp{i}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_CONFIG": _tf_config(ports, i), "TMPDIR": str(tmp)}
        with open(logs / f"worker{i}.log", "wb") as log:
            procs.append(subprocess.Popen([EDGESIGHT, "train", str(data), "--out", str(out), "--strategy", "multiworker", *OPTIONS, *extra],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _wait(procs, logs: Path, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("workers did not finish: " + " | ".join((logs / f"worker{i}.log").read_text()[-800:] for i in range(2)))


# --------------------------------------------------------------------------------------------
# TF_CONFIG and shards


def test_tf_config_roles_and_errors():
    ports = [2222, 2223, 2224]
    spec = read_tf_config({"TF_CONFIG": _tf_config(ports, 1)})
    assert (spec.rank, spec.is_chief, spec.address) == (1, False, "127.0.0.1:2223")
    assert read_tf_config({"TF_CONFIG": _tf_config(ports, 0)}).is_chief
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    spec = read_tf_config({"TF_CONFIG": json.dumps(with_chief)})
    assert spec == ClusterSpec(("a:1", "b:1", "c:1"), "worker", 0, True) and spec.rank == 1 and not spec.is_chief
    bad = {
        "": "needs the TF_CONFIG environment variable",
        "{oops": "TF_CONFIG is not valid JSON",
        json.dumps({"cluster": {"worker": ["a:1"]}}): "needs a 'cluster' and a 'task'",
        json.dumps({"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}): "jobs ps are not used",
        json.dumps({"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}): "'host:port' strings",
        json.dumps({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}): "an address twice",
        json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}): "is not one of the cluster's tasks",
    }
    for text, fragment in bad.items():
        with pytest.raises(ConfigError, match=fragment) as e:
            read_tf_config({"TF_CONFIG": text})
        assert "\n" not in str(e.value) and "set TF_CONFIG on every worker" in str(e.value)


def test_shards_cover_everything_once_and_pad_to_the_same_length():
    items = list(range(7))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    padded = [shard(items, r, 3, pad=True) for r in range(3)]
    assert [len(p) for p in padded] == [3, 3, 3] and padded[2] == [2, 5, 2]


def test_gathered_shards_are_put_back_in_order():
    # Three workers' shards of 7 items (rows 0..6), padded to 3 rows each, gathered in rank
    # order 2, 0, 1 (the collective's own order, learnt in the handshake).
    items = np.arange(7 * 2).reshape(7, 2)
    blocks = []
    for rank in (2, 0, 1):
        part = items[rank::3]
        blocks.append(np.vstack([part, np.full((3 - len(part), 2), -1)]))
    assert np.array_equal(reassemble(np.vstack(blocks), [2, 0, 1], 7), items)


def test_workers_with_other_data_or_options_disagree(tmp_path):
    from edgesight.training.config import TrainConfig
    from edgesight.training.data import make_split, scan_dataset

    data = write_color_dataset(tmp_path / "d", per_class=4, size=8)
    split = make_split(scan_dataset(data), 0.25, 0.25, 1)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "a"))
    same = fingerprint(split, cfg.updated(out=str(tmp_path / "b")))
    assert fingerprint(split, cfg) == same, "the output folder may differ between machines"
    assert fingerprint(split, cfg.updated(batch_size=16)) != same
    assert fingerprint(make_split(scan_dataset(data), 0.25, 0.25, 2), cfg) != same


# --------------------------------------------------------------------------------------------
# Two real workers


@pytest.mark.slow
def test_two_workers_write_one_run_folder_that_matches_one_worker(tmp_path):
    from edgesight.training.config import TrainConfig
    from edgesight.training.train import train

    data = write_color_dataset(tmp_path / "data", per_class=50, size=16, seed=3)
    out, logs = tmp_path / "two", tmp_path / "logs"
    procs = _start_workers(data, out, logs)
    # The one-worker run meanwhile, in this process, with the same options.
    single = tmp_path / "one"
    cfg = TrainConfig(data=str(data), out=str(single), model="cnn_small", img_size=16, alpha=0.5, epochs=8, batch_size=8,
                      learning_rate=5e-3, augment="none", early_stopping=0, seed=1)
    one = train(cfg, progress=False).metrics
    codes = _wait(procs, logs, 240)
    text = [(logs / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], text

    # The chief wrote a complete run folder, the same files as the one-worker run's.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    assert not out.with_name(out.name + ".partial").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distributed"]["workers"] == 2
    assert metrics["distributed"]["global_batch_size"] == 16 and metrics["distributed"]["batch_size_per_worker"] == 8
    assert metrics["distributed"]["learning_rate"] == pytest.approx(1e-2)
    assert "the chief writes the run folder" in text[1] and "wrote the run folder" in text[1]
    # The other worker left nothing: its temporary folder is gone, nothing else was written.
    assert list((logs / "tmp1").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs", "one", "two"]

    # The same accuracy as one worker, within the tolerance stated above.
    assert one["accuracy"] >= 0.8 and metrics["accuracy"] >= 0.8, (one["accuracy"], metrics["accuracy"])
    assert abs(metrics["accuracy"] - one["accuracy"]) <= TOLERANCE + 1e-9


@pytest.mark.slow
def test_a_worker_that_dies_stops_the_other_with_one_line(tmp_path):
    data = write_color_dataset(tmp_path / "data", per_class=10, size=16)
    out, logs = tmp_path / "run", tmp_path / "logs"
    procs = _start_workers(data, out, logs, "--epochs", "500", "--worker-timeout", "30")
    deadline = time.monotonic() + 120
    while "Epoch 3/" not in (logs / "worker1.log").read_text():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail("training did not start: " + (logs / "worker0.log").read_text()[-800:])
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    code = _wait(procs[:1], logs, 60)[0]
    assert code == 1 and time.monotonic() - killed < 45
    lines = (logs / "worker0.log").read_text().strip().splitlines()
    assert lines[-1].startswith("error: worker 0 of 2 (127.0.0.1:") and "multi-worker training stopped" in lines[-1], lines[-5:]
    assert "worker 1 (127.0.0.1:" in lines[-1]
    assert "Traceback" not in "\n".join(lines)
    # Nothing is left of the chief's run folder.
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
