"""Training on several machines (``--strategy multiworker``): the cluster ``TF_CONFIG`` describes,
its chief, and what the workers exchange.

Every worker runs ``edgesight train`` with the same data and options and its own ``TF_CONFIG``
task. Keras 3's ``fit`` does not train under ``tf.distribute.MultiWorkerMirroredStrategy`` in
this TensorFlow and Keras (it fails reducing a batch of distributed values), so the strategy
here only starts TensorFlow's collective runtime (its gRPC server and coordination service),
created before anything else runs TensorFlow ops in the process. The model then trains with
plain ``fit`` on every worker, each on its shard of the training images, and:

* gradients are averaged over the workers inside every training step (one all-reduce of all
  of them, :meth:`Cluster.all_reducing`), so every worker applies the same update; the
  weights start from the chief's (:meth:`Cluster.sync_weights`);
* the global batch is ``--batch-size`` times the number of workers, and the learning rates of
  these distributed phases are scaled by the same factor (the linear scaling rule);
* at the end of every epoch the logs (loss, accuracy, val_loss...) are averaged over the
  workers before any callback reads them, so early stopping, the learning-rate schedule and
  the best epoch are decided alike everywhere; a stop that any worker asks for (the time
  limit, Ctrl-C, which waits for the end of the epoch) stops them all (:meth:`Cluster.callbacks`);
* phase 1 on cached features: each worker computes the features of its shard of the images,
  the shards are gathered to every worker (:meth:`Cluster.gather_samples`), every worker fits
  the small head on all of them with the single-worker batch and learning rate, and the
  chief's head is what phase 2 starts from. The linear probe reuses the gathered features.

Only the chief writes the run folder; the other workers write theirs to a temporary folder
that is removed at the end. Every exchange has a deadline (``--worker-timeout``): a worker that
dies or stops answering makes the others stop with an error instead of waiting forever.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from edgesight.edge.errors import ConfigError, EdgesightError

log = logging.getLogger("edgesight.train")

T = TypeVar("T")
EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
# A group of our own among TensorFlow's collectives (the strategy numbers its groups from 1).
GROUP_KEY = 0xE5
# Instance keys of the collectives compiled into training steps; eager exchanges count from 1.
_GRAPH_KEYS = 1_000_000


@dataclass(frozen=True)
class ClusterSpec:
    """The cluster of ``TF_CONFIG``: every worker's address, and this process's task.

    Attributes:
        workers: ``host:port`` of every worker, the chief first.
        task_type: ``chief`` or ``worker``.
        task_index: this task's index in its job.
        has_chief: the cluster has a ``chief`` job (else worker 0 is the chief).
    """

    workers: Tuple[str, ...]
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def rank(self) -> int:
        """This worker's position in :attr:`workers` (0: the chief)."""
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if self.has_chief else 0)

    @property
    def is_chief(self) -> bool:
        """TensorFlow's rule: the ``chief`` task, or worker 0 when the cluster has no chief."""
        return self.rank == 0

    @property
    def address(self) -> str:
        return self.workers[self.rank]

    def name(self, rank: Optional[int] = None) -> str:
        """``worker 1 of 2 (host:port)``, for messages."""
        r = self.rank if rank is None else rank
        return f"worker {r} of {len(self.workers)} ({self.workers[r]})"


def read_tf_config(env: Optional[Mapping[str, str]] = None) -> ClusterSpec:
    """Parse the ``TF_CONFIG`` environment variable.

    Raises:
        ConfigError: it is missing, not JSON, or does not describe a chief/worker cluster and
            this process's task in it.
    """
    text = (os.environ if env is None else env).get("TF_CONFIG", "").strip()
    fix = f"set TF_CONFIG on every worker, e.g. {EXAMPLE} (its own index on each)"
    if not text:
        raise ConfigError(f"--strategy multiworker needs the TF_CONFIG environment variable describing the cluster: {fix}")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {fix}") from None
    cluster = data.get("cluster") if isinstance(data, dict) else None
    task = data.get("task") if isinstance(data, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG needs a 'cluster' and a 'task' object: {fix}")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise ConfigError(f"TF_CONFIG: jobs {', '.join(other)} are not used by edgesight train; list the machines under 'worker' (and optionally one 'chief'): {fix}")
    jobs = {}
    for job in ("chief", "worker"):
        addrs = cluster.get(job, [])
        if not isinstance(addrs, list) or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addrs):
            raise ConfigError(f"TF_CONFIG: cluster.{job} must be a list of 'host:port' strings: {fix}")
        jobs[job] = addrs
    if len(jobs["chief"]) > 1:
        raise ConfigError(f"TF_CONFIG: a cluster has at most one chief, got {len(jobs['chief'])}: {fix}")
    workers = tuple(jobs["chief"] + jobs["worker"])
    if not workers:
        raise ConfigError(f"TF_CONFIG: the cluster lists no workers: {fix}")
    if len(set(workers)) != len(workers):
        raise ConfigError(f"TF_CONFIG: the cluster lists an address twice; give each worker its own host:port: {fix}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker") or not isinstance(index, int) or not 0 <= index < len(jobs.get(task_type, [])):
        raise ConfigError(f"TF_CONFIG: task {json.dumps(task)} is not one of the cluster's tasks: {fix}")
    return ClusterSpec(workers, task_type, index, bool(jobs["chief"]))


def shard(items: Sequence[T], rank: int, count: int, pad: bool = False) -> List[T]:
    """Every ``count``-th item from ``rank`` on; with ``pad``, lengthened (repeating its first
    items) to ``ceil(len(items) / count)``, so every worker runs the same number of steps."""
    part = list(items[rank::count])
    if pad and part:
        size = -(-len(items) // count)
        part += part[: size - len(part)]
    return part


def reassemble(gathered: np.ndarray, order: Sequence[int], total: int) -> np.ndarray:
    """The ``total`` items in their order from a gather: ``gathered`` holds one block per worker,
    in the gather's ``order`` of ranks, each block that worker's items ``rank::len(order)``
    padded to ``ceil(total / len(order))`` rows."""
    size = len(order)
    rows = -(-total // size)
    full = np.zeros((total,) + gathered.shape[1:], gathered.dtype)
    for position, rank in enumerate(order):
        n = len(range(rank, total, size))
        full[rank::size] = gathered[position * rows : position * rows + n]
    return full


# The watchdog process: waits for its standard input to close (the worker joined, or ended);
# after the deadline it prints the error and kills the worker.
_WATCHDOG = """import os, select, signal, sys
if not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:
    sys.stderr.write(sys.argv[3] + "\\n")
    sys.stderr.flush()
    os.kill(int(sys.argv[1]), signal.SIGKILL)
"""


def _watchdog(seconds: float, message: str) -> subprocess.Popen:
    """A process that prints ``message`` and kills this one unless its stdin is closed within
    ``seconds``.

    Joining the cluster blocks inside TensorFlow's C++ runtime holding the GIL, so no Python
    thread runs meanwhile, and TensorFlow catches SIGTERM: a worker that never starts would
    keep the others waiting for ever.
    """
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), f"error: {message}"],
                            stdin=subprocess.PIPE)


def start(spec: ClusterSpec, timeout: float) -> "Cluster":
    """Join the cluster: start TensorFlow's collective runtime for ``spec``.

    Must run before anything else in the process runs TensorFlow ops. Waits up to ``timeout``
    seconds for every worker to join.

    Raises:
        ConfigError: TensorFlow already ran in this process.
    """
    from .tf import import_tensorflow

    if "tensorflow" not in sys.modules and "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not log.isEnabledFor(logging.DEBUG):
        # A worker that goes away makes TensorFlow log every aborted exchange as an error; the
        # one-line error of edgesight says it once (-v shows them).
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    tf = import_tensorflow()
    print(f"joining the cluster as {spec.name()}{' (chief: writes the run folder)' if spec.is_chief else ''}; "
          f"waiting up to {timeout:g} s for {len(spec.workers) - 1} other worker(s)", flush=True)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    joined = _watchdog(timeout, f"{spec.name()}: the cluster did not form within {timeout:g} s (--worker-timeout): "
                                f"start every worker of TF_CONFIG ({', '.join(spec.workers)}) with the same data and options, "
                                "and check that each can reach the others' ports")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as e:
        if "startup" not in str(e):
            raise
        raise ConfigError("--strategy multiworker must join the cluster before TensorFlow runs anything in this process: "
                          "start each worker as its own `edgesight train` process") from e
    except tf.errors.OpError as e:
        detail = " ".join(str(e.message).split())[:160]
        raise ConfigError(f"{spec.name()}: cannot serve the cluster on {spec.address} ({detail}): another program may use "
                          "that port, or it is not an address of this machine; give this worker a free port of its own in TF_CONFIG") from e
    finally:
        joined.stdin.close()
        joined.wait()
    return Cluster(spec, strategy, timeout)


class Cluster:
    """This worker's view of a running cluster: its rank and the exchanges with the others.

    Every worker must call the exchanges in the same order; each waits up to ``timeout``
    seconds for the others.
    """

    def __init__(self, spec: ClusterSpec, strategy: Any, timeout: float) -> None:
        self.spec = spec
        self.strategy = strategy
        self.timeout = float(timeout)
        self.size = len(spec.workers)
        self.rank = spec.rank
        self._key = 0
        self._graph_key = _GRAPH_KEYS
        self._order: Optional[List[int]] = None

    @property
    def is_chief(self) -> bool:
        return self.spec.is_chief

    def shard(self, items: Sequence[T], pad: bool = False) -> List[T]:
        """This worker's share of ``items`` (see :func:`shard`)."""
        return shard(items, self.rank, self.size, pad)

    def distributed(self, cfg: Any) -> dict:
        """What ``metrics.json`` records of the cluster: the workers, the batch sizes and the
        learning rates the distributed phases used."""
        return {"workers": self.size, "batch_size_per_worker": cfg.batch_size, "global_batch_size": cfg.batch_size * self.size,
                "learning_rate": cfg.learning_rate * self.size, "fine_tune_lr": cfg.fine_tune_lr * self.size,
                "scaling": f"linear: --lr and --fine-tune-lr x{self.size}; phase 1's head (on gathered features) at --lr and --batch-size"}

    def _next(self) -> int:
        self._key += 1
        return self._key

    def _tf(self):
        from .tf import import_tensorflow

        return import_tensorflow()

    def _reduce(self, values, key: int, final: str = "Div", timeout: Optional[float] = None):
        tf = self._tf()
        return tf.raw_ops.CollectiveReduceV2(input=values, group_size=self.size, group_key=GROUP_KEY, instance_key=key,
                                             ordering_token=[], merge_op="Add", final_op=final,
                                             timeout_seconds=self.timeout if timeout is None else timeout)

    def mean(self, values: Sequence[float]) -> np.ndarray:
        """The element-wise mean of ``values`` over the workers."""
        return np.asarray(self._reduce(np.asarray(values, np.float64), self._next()))

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any worker."""
        return bool(np.asarray(self._reduce(np.asarray([1.0 if flag else 0.0]), self._next(), "Id"))[0] > 0)

    def barrier(self, timeout: float = 0.0) -> None:
        """Wait for every worker (0: no deadline but the cluster's own failure detection)."""
        self._reduce(np.zeros(1), self._next(), "Id", timeout)

    def wait_for_chief(self, out: Any) -> None:
        """A worker other than the chief, after training: wait until the chief has written the
        run folder (no deadline: a chief that dies is noticed by the cluster itself)."""
        print(f"{self.spec.name()}: training done; waiting for the chief to write the run folder", flush=True)
        try:
            self.barrier()
        except Exception as e:
            raise (self.failure(e) or e) from e
        print(f"{self.spec.name()}: finished; the chief ({self.spec.workers[0]}) wrote the run folder {out}")

    def release(self) -> None:
        """The chief, once the run folder is in place: let the other workers end."""
        try:
            self.barrier(self.timeout)
        except Exception as e:
            # The run folder is complete; a worker that left early changes nothing in it.
            log.warning("the other workers did not wait for the end of the run (%s)", self.failure(e) or e)

    def _gather(self, array: np.ndarray) -> np.ndarray:
        tf = self._tf()
        return np.asarray(tf.raw_ops.CollectiveGatherV2(input=array, group_size=self.size, group_key=GROUP_KEY,
                                                        instance_key=self._next(), ordering_token=[],
                                                        timeout_seconds=self.timeout))

    def handshake(self, fingerprint: Sequence[int]) -> None:
        """Learn the workers' order in gathers and check that they all train the same thing.

        Raises:
            ConfigError: another worker has other data or options.
        """
        rows = self._gather(np.asarray([[self.rank, *fingerprint]], np.int64))
        self._order = [int(r) for r in rows[:, 0]]
        mine = list(fingerprint)
        for row in rows:
            if list(row[1:]) != mine:
                raise ConfigError(f"{self.spec.name()} and {self.spec.name(int(row[0]))} do not train the same thing "
                                  "(their images, classes or options differ): give every worker the same DATA and options")

    def gather_samples(self, local: np.ndarray, total: int, axis: int = 0) -> np.ndarray:
        """Reassemble an array computed per shard: ``local`` holds, along ``axis``, this
        worker's items ``rank::size`` of ``total``; returns all ``total`` in their order."""
        if self._order is None:
            raise RuntimeError("Cluster.handshake() must come before the first gather")
        part = np.moveaxis(np.asarray(local), axis, 0)
        rows = -(-total // self.size)
        padded = np.zeros((rows,) + part.shape[1:], part.dtype)
        padded[: len(part)] = part
        return np.moveaxis(reassemble(self._gather(padded), self._order, total), 0, axis)

    def sync_weights(self, model: Any) -> None:
        """Give every worker the chief's weights (the floating-point ones) of ``model``."""
        weights = model.get_weights()
        floats = [i for i, w in enumerate(weights) if np.issubdtype(np.asarray(w).dtype, np.floating)]
        if not floats:
            return
        flat = np.concatenate([np.asarray(weights[i], np.float32).ravel() for i in floats])
        if not self.is_chief:
            flat[:] = 0.0
        # A sum where only the chief adds anything: its values, exactly, everywhere.
        flat = np.asarray(self._reduce(flat, self._next(), "Id"))
        start = 0
        for i in floats:
            w = np.asarray(weights[i])
            weights[i] = flat[start : start + w.size].reshape(w.shape).astype(w.dtype)
            start += w.size
        model.set_weights(weights)

    def all_reducing(self, optimizer: Any) -> Any:
        """``optimizer``, changed to average every step's gradients over the workers first."""
        tf = self._tf()
        self._graph_key += 1
        key, cluster = self._graph_key, self
        base = type(optimizer)

        def apply(opt, grads, trainable_variables=None):
            grads = list(grads)
            present = [i for i, g in enumerate(grads) if g is not None]
            if present:
                parts = [tf.cast(tf.reshape(tf.convert_to_tensor(grads[i]), [-1]), tf.float32) for i in present]
                flat = cluster._reduce(tf.concat(parts, 0), key)
                start = 0
                for i, part in zip(present, parts):
                    n = int(part.shape[0])
                    grads[i] = tf.cast(tf.reshape(flat[start : start + n], tf.shape(grads[i])), grads[i].dtype)
                    start += n
            return base.apply(opt, grads, trainable_variables)

        optimizer.__class__ = type(f"AllReduced{base.__name__}", (base,), {"apply": apply})
        return optimizer

    def callbacks(self, keras: Any, stopper: Any = None) -> Tuple[Any, Any]:
        """Two Keras callbacks: the first (put before all others) averages each epoch's logs
        over the workers; the last (after all others) stops every worker when any one wants to
        stop (a callback set ``stop_training``, or ``stopper.requested``)."""
        cluster = self

        class AverageLogs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if logs:
                    keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float, np.floating, np.integer)))
                    for k, v in zip(keys, cluster.mean([float(logs[k]) for k in keys])):
                        logs[k] = float(v)

        class AgreeStop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                wants = bool(self.model.stop_training) or bool(stopper is not None and stopper.requested)
                self.model.stop_training = cluster.any(wants)

        return AverageLogs(), AgreeStop()

    def _lost(self, message: str) -> str:
        """What TensorFlow's message about an aborted exchange says, in a few words."""
        import re

        ranks = {0 if job == "chief" else int(t) + (1 if self.spec.has_chief else 0)
                 for job, t in re.findall(r"/job:(chief|worker)/replica:\d+/task:(\d+)", message)}
        others = sorted(r for r in ranks - {self.rank} if r < self.size)
        who = ", ".join(f"worker {r} ({self.spec.workers[r]})" for r in others) or "another worker"
        if "heartbeat" in message or "unhealthy" in message or "crashed" in message:
            return f"{who} stopped (no heartbeat)"
        if re.search(r"(?i)connection reset|socket closed|connection refused|failed to connect|failed to send rpc|preempted", message):
            return f"the connection to {who} was lost"
        text = " ".join(re.sub(r"\{\{[^}]*\}\}", "", message).split())
        return f"{who} stopped or cannot be reached ({text[:160]})"

    def failure(self, error: BaseException) -> Optional[EdgesightError]:
        """The one-line error for a failed exchange (another worker died or stopped answering),
        or None when ``error`` is something else."""
        tf = self._tf()
        if isinstance(error, tf.errors.DeadlineExceededError):
            why = f"another worker did not answer within {self.timeout:g} s (--worker-timeout)"
        elif isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                                tf.errors.FailedPreconditionError, tf.errors.InternalError)):
            why = self._lost(str(getattr(error, "message", error)))
        else:
            return None
        return EdgesightError(f"{self.spec.name()}: multi-worker training stopped: {why}; check that every worker of "
                              "TF_CONFIG runs and reaches the others, then start them all again")


def fingerprint(split: Any, cfg: Any) -> List[int]:
    """Numbers every worker of one training has alike: the split's sizes and a checksum of its
    images (relative to the dataset), classes and options (paths of this machine left out)."""
    import zlib

    options = {k: v for k, v in cfg.to_dict().items() if k not in ("data", "out", "overwrite", "init_from")}
    images = {name: [(os.path.relpath(s.path, split.root), s.label) for s in getattr(split, name)] for name in ("train", "val", "test")}
    text = json.dumps({"classes": list(split.classes), "images": images, "options": options}, sort_keys=True, default=str)
    return [len(split.train), len(split.val), len(split.test), zlib.crc32(text.encode("utf-8"))]


def join(cfg: Any, split: Any) -> Cluster:
    """Join the cluster of ``TF_CONFIG`` for the training of ``split`` with ``cfg``, and check
    that every worker trains the same thing (see :meth:`Cluster.handshake`)."""
    cluster = start(read_tf_config(), cfg.worker_timeout)
    try:
        cluster.handshake(fingerprint(split, cfg))
    except Exception as e:
        raise (cluster.failure(e) or e) from e
    n = cluster.size
    print(f"{n} workers: global batch {cfg.batch_size * n} ({cfg.batch_size} per worker), learning rate x{n} "
          f"({cfg.learning_rate * n:g}); {'this worker writes the run folder' if cluster.is_chief else 'the chief writes the run folder'}",
          flush=True)
    return cluster
