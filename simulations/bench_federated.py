"""Seconds per federated round: fedmodel's Flower simulation against the textbook client, TFF and the compute limit.

What is measured
----------------
The workload of McMahan et al. 2017 ("Communication-Efficient Learning of Deep Networks from Decentralized
Data"): 100 clients with an IID partition of the training set, 10 clients sampled per round, 5 local epochs
at batch 10, plain SGD with client learning rate 0.1, FedAvg, the 2NN MLP (hidden (200, 200)). The data is an
embedded set (``mnist5k``: 4,000 training examples, so 40 per client, of which fedmodel's shard keeps 36 for
training and 4 for local evaluation; or ``digits``). Every implementation trains on the same shards
(:func:`fedmodel.federated.shards.client_shard`). For each implementation the table shows the median wall-clock
seconds of rounds 2..R (round 1 holds start-up and tracing) and the ratio to the compute limit:

(a) ``ours``: :func:`fedmodel.federated.simulate.run_simulation`, the real ServerApp/ClientApp on Flower's Ray
    engine (one actor per core), ``fraction-evaluate = 0``; the per-round ``seconds`` of ``run.json`` cover
    training, aggregation, the server's evaluation on the test set and the checkpoint. The server evaluation
    (:meth:`LocalTrainer.evaluate` on the test set) is also timed alone afterwards in the same process, and
    the row ``ours, without server eval`` subtracts it.
(b) ``textbook``: a Flower 1.23 simulation of the tutorial pattern (``simulations/textbook_client.py``):
    the ClientApp builds and compiles a new Keras model on every call; the ServerApp runs ``FedAvg.start``
    with a centralized ``evaluate_fn`` (also a new model per call). Rounds are timed between the ends of
    consecutive ``evaluate_fn`` calls, so they too include the server's evaluation.
(c) ``TFF``: ``tff.learning.algorithms.build_weighted_fed_avg`` with ``from_keras_model`` of the same zoo MLP,
    client SGD 0.1 and server SGD 1.0 (plain FedAvg), 10 clients sampled per round from the same 100 shards,
    each client's ``tf.data`` pipeline ``shuffle -> batch(10) -> repeat(5)`` built before timing; one round
    is one ``process.next`` (no server-side evaluation, which TFF does separately).
(d) ``central limit``: one compiled Keras model in one process, ``model.fit`` over the union of the 10 sampled
    clients' training examples for 5 epochs at batch 10 (one round's compute), median of a few repeats after
    a warm-up fit; the ``x limit`` column divides by this row. Two more rows use fedmodel's cached
    :class:`~fedmodel.federated.local.LocalTrainer` (whose local epochs run in one compiled function, not
    Keras ``fit``): one ``fit`` over the same union of examples, and the 10 shards trained one after another
    (the client work of a round without Flower, Ray or the server).

Memory: while each part runs, a background thread sums the resident set size (RSS) and the proportional set
size (PSS, which shares each shared page among the processes mapping it) over the part's whole process tree
(its process, Ray's GCS, raylet and workers, TFF's ``worker_binary``) every 0.5 s; the tables show the peaks.
RSS counts TensorFlow's shared libraries once per process, PSS does not. Our simulation is also run with
1,000 clients (4 examples each on ``mnist5k``), 10 per round, 3 rounds.

How
---
Each part runs in its own fresh process (``multiprocessing`` spawn), one after another, with its output in a
log file under the work directory; the parent imports neither TensorFlow, Ray nor TFF. When a part ends,
it reports and terminates any of its descendants still alive (Ray is shut down first; TFF's C++
``worker_binary`` outlives Python otherwise), and the parent terminates whatever it saw in the part's tree
that is still running, also at exit. A part that does not finish within ``--timeout`` seconds is killed.

Run ``uv run python -m simulations.bench_federated`` (``--quick`` for a smoke run; ``--help`` for options).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from simulations.section import write_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PARTS: tuple[str, ...] = ("central", "ours", "ours_tff", "scale", "textbook", "tff")
CONTEXT = multiprocessing.get_context("spawn")
SAMPLE_INTERVAL = 0.5
MB = 1024 * 1024

# ---------------------------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------------------------


def workload(*, dataset: str, num_clients: int, rounds: int, run_dir: str, seed: int) -> dict[str, Any]:
    """FedAvg settings of McMahan et al. 2017 (2NN, E = 5, B = 10, C = 0.1 of 100 clients) as a run config."""
    return {
        "model": "mlp",
        "hparam-hidden": "[200, 200]",
        "dataset": dataset,
        "num-clients": num_clients,
        "clients-per-round": 10,
        "rounds": rounds,
        "partition": "iid",
        "local-epochs": 5,
        "local-batch-size": 10,
        "client-optimizer": "sgd",
        "client-lr": 0.1,
        "strategy": "fedavg",
        "fraction-evaluate": 0.0,
        "run-dir": run_dir,
        "seed": seed,
    }


def steady(seconds: Sequence[float]) -> float:
    """Median seconds of rounds 2.. (round 1 alone when there is only one)."""
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


# ---------------------------------------------------------------------------------------------------------------
# The parts, each run in a fresh process
# ---------------------------------------------------------------------------------------------------------------


def part_central(settings: dict[str, Any], *, repeats: int) -> dict[str, Any]:
    """(d): one model.fit over the round's examples, and 10 LocalTrainer fits in sequence."""
    import numpy as np
    import tensorflow as tf

    from fedmodel import zoo
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.shards import Shard, client_shard, dataset_for

    config = FederatedConfig.from_mapping(settings)
    data = dataset_for(config)
    rng = np.random.default_rng(config.seed)
    samples = [rng.choice(config.num_clients, config.clients_per_round, replace=False) for _ in range(repeats + 1)]
    model = zoo.build_model(
        config.model,
        input_shape=data.info.input_shape,
        num_classes=data.info.num_classes,
        seed=config.seed,
        **config.hparams,
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(config.client_lr),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    fit_seconds, examples = [], 0
    for ids in samples:  # the first fit traces; it is dropped by steady()
        shards = [client_shard(config, int(i)) for i in ids]
        x = np.concatenate([s.x_train for s in shards])
        y = np.concatenate([s.y_train for s in shards])
        examples = len(x)
        start = time.perf_counter()
        model.fit(x, y, batch_size=config.local_batch_size, epochs=config.local_epochs, shuffle=True, verbose=0)
        fit_seconds.append(time.perf_counter() - start)
    trainer = trainer_for(
        TrainerKey.of(config, input_shape=data.info.input_shape, num_classes=data.info.num_classes, proximal_mu=0.0)
    )
    weights = trainer.model.get_weights()
    sequential_seconds, union_seconds = [], []
    for ids in samples:
        shards = [client_shard(config, int(i)) for i in ids]
        start = time.perf_counter()
        for shard in shards:
            trainer.fit(weights, shard, epochs=config.local_epochs)
        sequential_seconds.append(time.perf_counter() - start)
        x = np.concatenate([s.x_train for s in shards])
        y = np.concatenate([s.y_train for s in shards])
        start = time.perf_counter()
        trainer.fit(weights, Shard(x, y, x[:0], y[:0]), epochs=config.local_epochs)
        union_seconds.append(time.perf_counter() - start)
    return {
        "fit": fit_seconds,
        "sequential": sequential_seconds,
        "union": union_seconds,
        "examples": examples,
        "steps": config.local_epochs * -(-examples // config.local_batch_size),
    }


def part_ours(settings: dict[str, Any], *, eval_repeats: int) -> dict[str, Any]:
    """(a): fedmodel's simulation; per-round seconds from run.json, then the server evaluation alone."""
    import numpy as np

    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.shards import dataset_for
    from fedmodel.federated.simulate import preflight, run_simulation

    config = FederatedConfig.from_mapping(settings)
    preflight(config)
    assert config.run_dir is not None
    start = time.perf_counter()
    with FirstRound(Path(config.run_dir)) as first:
        run_simulation(config)
    total = time.perf_counter() - start
    record = json.loads((Path(config.run_dir) / "run.json").read_text())
    rounds = record["rounds"]
    diagnostics = json.loads((Path(config.run_dir) / "diagnostics.json").read_text())["rounds"]  # round timing
    data = dataset_for(config)
    evaluator = trainer_for(  # the server's evaluator, as in fedmodel.federated.server.run_server
        TrainerKey.of(config, input_shape=data.info.input_shape, num_classes=data.info.num_classes, proximal_mu=0.0)
    )
    with np.load(Path(config.run_dir) / "weights.npz") as npz:
        weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    eval_seconds = []
    for _ in range(eval_repeats + 1):
        begin = time.perf_counter()
        evaluator.evaluate(weights, data.x_test, data.y_test, task=data.info.task)
        eval_seconds.append(time.perf_counter() - begin)
    return {
        "seconds": [float(d["seconds"]) for d in diagnostics],
        "accuracy": float(rounds[-1]["accuracy"]) if rounds else float("nan"),
        "eval_seconds": eval_seconds[1:],
        "total": total,
        "first_round_at": first.at,
    }


def part_ours_tff(settings: dict[str, Any]) -> dict[str, Any]:
    """(a') fedmodel's TFF backend (``fedmodel simulate --backend tff``): per-round seconds from its diagnostics."""
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.tff_backend import run_tff

    config = FederatedConfig.from_mapping(settings)
    assert config.run_dir is not None
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with FirstRound(run_dir) as first:
        state = run_tff(config, run_dir=run_dir, stream=sys.stdout)
    return {
        "seconds": [float(d["seconds"]) for d in state.diagnostics],
        "accuracy": float(state.history[-1]["accuracy"]) if state.history else float("nan"),
        "total": time.perf_counter() - start,
        "first_round_at": first.at,
    }


class FirstRound:
    """Watches a run directory's ``run.json`` and notes ``time.monotonic()`` when round 1 is recorded in it.

    fedmodel rewrites ``run.json`` (atomically) after every round, so the first version with
    ``rounds_run >= 1`` marks the end of round 1 to within the polling interval (0.05 s).
    """

    def __init__(self, run_dir: Path, *, interval: float = 0.05) -> None:
        self.path, self.interval = run_dir / "run.json", interval
        self.at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FirstRound:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._done.is_set() and self.at is None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.path.read_text()).get("rounds_run", 0) >= 1:
                    self.at = time.monotonic()
                    return
            self._done.wait(self.interval)


def part_textbook(settings: dict[str, Any]) -> dict[str, Any]:
    """(b): the textbook Flower apps (new Keras model per call) on the same simulation engine."""
    import flwr.simulation
    import ray

    from fedmodel.federated.config import FederatedConfig
    from simulations.textbook_client import RoundClock, make_textbook_apps

    config = FederatedConfig.from_mapping(settings)
    clock = RoundClock()
    server, client = make_textbook_apps(config, clock)
    cpus = os.cpu_count() or 1
    backend = {  # the same engine settings as fedmodel.federated.simulate.run_simulation
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True},
    }
    start = time.perf_counter()
    try:
        flwr.simulation.run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=config.num_clients,
            backend_config=backend,  # type: ignore[arg-type]
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    rounds = sorted(r for r in clock.eval_end if r > 0)
    return {
        "seconds": clock.round_seconds(),
        "accuracy": clock.accuracy[rounds[-1]] if rounds else float("nan"),
        "eval_seconds": [clock.eval_seconds[r] for r in rounds],
        "total": time.perf_counter() - start,
        "first_round_at": clock.monotonic_end.get(1),
    }


def part_tff(settings: dict[str, Any]) -> dict[str, Any]:
    """(c): TFF's weighted FedAvg on the same shards; one ``process.next`` per round."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedmodel import zoo
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.shards import client_shard, dataset_for

    config = FederatedConfig.from_mapping(settings)
    data = dataset_for(config)

    def client_data(pid: int) -> tf.data.Dataset:
        shard = client_shard(config, pid)
        ds = tf.data.Dataset.from_tensor_slices((shard.x_train, shard.y_train))
        return ds.shuffle(len(shard.x_train), seed=pid).batch(config.local_batch_size).repeat(config.local_epochs)

    spec = client_data(0).element_spec  # pipelines are built for the sampled clients only (100,000 clients)

    def keras_model() -> tf.keras.Model:
        return zoo.build_model(
            config.model,
            input_shape=data.info.input_shape,
            num_classes=data.info.num_classes,
            seed=config.seed,
            **config.hparams,
        )

    def model_fn() -> Any:
        return tff.learning.models.from_keras_model(
            keras_model(),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=spec,
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    start = time.perf_counter()
    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=config.client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
    )
    state = process.initialize()
    build = time.perf_counter() - start
    rng = np.random.default_rng(config.seed)
    seconds: list[float] = []
    first_round_at = None
    for _ in range(config.rounds):
        ids = rng.choice(config.num_clients, config.clients_per_round, replace=False)
        datasets = [client_data(int(i)) for i in ids]  # untimed, as before the timed round
        begin = time.perf_counter()
        state = process.next(state, datasets).state
        seconds.append(time.perf_counter() - begin)
        first_round_at = first_round_at or time.monotonic()
    model = keras_model()
    process.get_model_weights(state).assign_weights_to(model)
    logits = model.predict(data.x_test, batch_size=512, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == data.y_test))
    return {
        "seconds": seconds,
        "accuracy": accuracy,
        "build": build,
        "version": tff.__version__,
        "first_round_at": first_round_at,
    }


PART_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "central": part_central,
    "ours": part_ours,
    "ours_tff": part_ours_tff,
    "scale": part_ours,
    "textbook": part_textbook,
    "tff": part_tff,
}


def _child(name: str, kwargs: dict[str, Any], conn: Connection, log_path: str) -> None:
    """Entry point of a part's process: output to the log file, run, report, clean up, exit."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    message: dict[str, Any]
    try:
        message = {"result": PART_FUNCTIONS[name](**kwargs)}
    except BaseException:  # report any failure to the parent, which prints it
        message = {"error": traceback.format_exc()}
    from fedmodel.federated.tff_backend import stop_children  # imports neither TFF nor TensorFlow

    message["leftover"] = stop_children()
    try:
        conn.send(message)
        conn.close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown: Ray's and TFF's threads must not keep the process alive


# ---------------------------------------------------------------------------------------------------------------
# The parent: process-tree memory, time limits, clean-up
# ---------------------------------------------------------------------------------------------------------------


class TreeMonitor(threading.Thread):
    """Samples RSS and PSS summed over a process and its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, *, interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.seen: dict[int, psutil.Process] = {}
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for proc in tree:
            self.seen.setdefault(proc.pid, proc)
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(tree))

    def still_running(self) -> list[psutil.Process]:
        """Processes seen in the tree that still run (``is_running`` also checks the start time)."""
        return [p for pid, p in self.seen.items() if pid != self.pid and p.is_running()]


MONITORS: list[TreeMonitor] = []


def terminate(processes: Iterable[psutil.Process]) -> list[str]:
    """Terminate, then kill after 5 s, the given processes; their names."""
    procs, names = list(processes), []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.name()} ({proc.pid})")
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return names


@atexit.register
def _cleanup_at_exit() -> None:
    for monitor in MONITORS:
        terminate(monitor.still_running())


@dataclasses.dataclass
class Outcome:
    """What one part returned, or why it did not, with its process tree's peak memory."""

    name: str
    result: dict[str, Any] | None
    error: str | None
    wall: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_procs: int
    leftover: list[str]
    log: Path
    startup: float | None = None  # seconds from launching the process to the end of round 1


def run_part(name: str, kwargs: dict[str, Any], *, workdir: Path, timeout: float, tag: str = "") -> Outcome:
    """Run one part in a fresh process, sampling its tree's memory; kill it after ``timeout`` seconds.

    ``tag`` distinguishes the log files of repeated runs of one part (``NAME-TAG.log``).
    """
    log = workdir / (f"{name}-{tag}.log" if tag else f"{name}.log")
    receiver, sender = CONTEXT.Pipe(duplex=False)
    proc = CONTEXT.Process(target=_child, args=(name, kwargs, sender, str(log)), name=f"bench-{name}")
    start = time.perf_counter()
    launched = time.monotonic()
    proc.start()
    sender.close()
    assert proc.pid is not None
    monitor = TreeMonitor(proc.pid)
    MONITORS.append(monitor)
    monitor.start()
    message: dict[str, Any] | None = None
    error: str | None = None
    while message is None:
        if receiver.poll(1.0):
            try:
                message = receiver.recv()
            except EOFError:
                error = f"the process ended without a result (exit code {proc.exitcode}); see {log}"
                break
        elif not proc.is_alive() and not receiver.poll(0.5):
            error = f"the process ended without a result (exit code {proc.exitcode}); see {log}"
            break
        elif time.perf_counter() - start > timeout:
            error = f"timed out after {timeout:.0f} s; see {log}"
            break
    wall = time.perf_counter() - start
    proc.join(timeout=30)
    monitor.stop()
    leftover = list(message.get("leftover", [])) if message else []
    if proc.is_alive():
        leftover += terminate([psutil.Process(proc.pid)])
    leftover += terminate(monitor.still_running())
    if message is not None and "error" in message:
        error = f"{message['error'].strip().splitlines()[-1]} (traceback in {log})"
    result = message.get("result") if message else None
    first = result.get("first_round_at") if result else None
    return Outcome(
        name=name,
        result=result,
        error=error,
        wall=wall,
        peak_rss_mb=monitor.peak_rss / MB,
        peak_pss_mb=monitor.peak_pss / MB,
        peak_procs=monitor.peak_procs,
        leftover=leftover,
        log=log,
        startup=first - launched if first is not None else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    seconds: float | None
    detail: str
    first: float | None = None
    rounds: int | None = None
    accuracy: float | None = None


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def rows_for(outcomes: dict[str, Outcome]) -> list[Row]:
    """The speed rows, in the order of the table."""
    rows: list[Row] = []

    def failed(name: str, label: str) -> None:
        out = outcomes.get(name)
        if out is not None and out.result is None:
            rows.append(Row(label, None, f"failed: {out.error}"))

    ours = outcomes.get("ours")
    if ours is not None and ours.result is not None:
        r = ours.result
        s, ev = steady(r["seconds"]), statistics.median(r["eval_seconds"])
        n = len(r["seconds"])
        rows.append(Row("(a) ours: fedmodel simulate (train + server eval)", s, "", r["seconds"][0], n, r["accuracy"]))
        rows.append(Row("(a) ours, without server eval", s - ev, f"server eval alone {ev:.3f} s"))
    failed("ours", "(a) ours: fedmodel simulate")
    on_tff = outcomes.get("ours_tff")
    if on_tff is not None and on_tff.result is not None:
        r = on_tff.result
        n = len(r["seconds"])
        rows.append(
            Row(
                "(a') ours on TFF: fedmodel simulate --backend tff",
                steady(r["seconds"]),
                "",
                r["seconds"][0],
                n,
                r["accuracy"],
            )
        )
    failed("ours_tff", "(a') ours on TFF")
    book = outcomes.get("textbook")
    if book is not None and book.result is not None:
        r = book.result
        s, ev = steady(r["seconds"]), steady(r["eval_seconds"])
        n = len(r["seconds"])
        rows.append(Row("(b) textbook Flower client (new model per call)", s, "", r["seconds"][0], n, r["accuracy"]))
        rows.append(Row("(b) textbook, without server eval", s - ev, f"server eval alone {ev:.3f} s"))
    failed("textbook", "(b) textbook Flower client")
    tff = outcomes.get("tff")
    if tff is not None and tff.result is not None:
        r = tff.result
        rows.append(
            Row(
                f"(c) TFF {r['version']} build_weighted_fed_avg",
                steady(r["seconds"]),
                f"build + initialize {r['build']:.1f} s; no server eval",
                r["seconds"][0],
                len(r["seconds"]),
                r["accuracy"],
            )
        )
    failed("tff", "(c) TFF build_weighted_fed_avg")
    central = outcomes.get("central")
    if central is not None and central.result is not None:
        r = central.result
        rows.append(
            Row(
                f"(d) central limit: one model.fit, {r['examples']} examples x 5 epochs",
                steady(r["fit"]),
                f"{r['steps']} steps of batch 10",
                r["fit"][0],
            )
        )
        rows.append(
            Row(
                "(d) one LocalTrainer.fit over the same examples",
                steady(r["union"]),
                "fedmodel's compiled local loop, one call",
            )
        )
        rows.append(
            Row(
                "(d) 10 client fits in one process (LocalTrainer, no Flower)",
                steady(r["sequential"]),
                "ours' client work without Flower, Ray or the server",
            )
        )
    failed("central", "(d) central limit")
    return rows


def speed_table(rows: list[Row], limit: float | None) -> str:
    lines = ["| implementation | s/round | x limit |", "| --- | --- | --- |"]
    for row in rows:
        ratio = row.seconds / limit if row.seconds is not None and limit else None
        lines.append(f"| {row.label} | {_num(row.seconds)} | {_num(ratio, '.1f')} |")
    return "\n".join(lines)


def detail_table(rows: list[Row]) -> str:
    lines = ["| implementation | rounds timed | round 1 s | test accuracy | notes |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        timed = f"{row.rounds - 1} (2..{row.rounds})" if row.rounds and row.rounds > 1 else "-"
        acc = _num(row.accuracy, ".4f") if row.accuracy is not None else "-"
        lines.append(f"| {row.label} | {timed} | {_num(row.first) if row.first else '-'} | {acc} | {row.detail} |")
    return "\n".join(lines)


def memory_table(outcomes: dict[str, Outcome], clients: dict[str, int]) -> str:
    lines = [
        "| clients | peak RSS (MB) | s/round | peak PSS (MB) | processes | rounds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("ours", "scale"):
        out = outcomes.get(name)
        if out is None:
            continue
        if out.result is None:
            lines.append(f"| {clients[name]:,} | {out.peak_rss_mb:,.0f} | failed: {out.error} | | | |")
            continue
        s = out.result["seconds"]
        lines.append(
            f"| {clients[name]:,} | {out.peak_rss_mb:,.0f} | {_num(steady(s))} | {out.peak_pss_mb:,.0f} "
            f"| {out.peak_procs} | {len(s)} |"
        )
    return "\n".join(lines)


def startup_table(outcomes: dict[str, Outcome]) -> str:
    """Start-up (launch to end of round 1) and peak memory of every part that ran."""
    lines = [
        "| part | start-up s | peak RSS (MB) | peak PSS (MB) | processes | wall s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, out in outcomes.items():
        lines.append(
            f"| {name} | {_num(out.startup, '.1f')} | {out.peak_rss_mb:,.0f} | {out.peak_pss_mb:,.0f} "
            f"| {out.peak_procs} | {out.wall:.0f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6, help="rounds per simulation; rounds 2.. are timed")
    parser.add_argument("--textbook-rounds", type=int, default=None, help="rounds of (b) (default: --rounds)")
    parser.add_argument("--tff-rounds", type=int, default=None, help="rounds of (c) (default: --rounds)")
    parser.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits", "synthetic"))
    parser.add_argument("--scale-clients", type=int, default=1000, help="clients of the memory run")
    parser.add_argument("--scale-rounds", type=int, default=3, help="rounds of the memory run")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of (d) and of the server eval")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip, of: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="3 rounds everywhere, 2 repeats (smoke run)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a part is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="run directories and logs (default: a new temp dir)")
    parser.add_argument("--json", default=None, help="write the section (Markdown + data) here for the suite")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if unknown := skip - set(PARTS):
        parser.error(f"--skip takes {', '.join(PARTS)}; got {', '.join(sorted(unknown))}")
    args.skip = skip
    if args.quick:
        args.rounds, args.scale_rounds, args.repeats = 3, 3, 2
        args.textbook_rounds = args.tff_rounds = None
    for name in ("rounds", "scale_rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_federated_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = {
        "ours": args.rounds,
        "ours_tff": args.rounds,
        "scale": args.scale_rounds,
        "textbook": args.textbook_rounds or args.rounds,
        "tff": args.tff_rounds or args.rounds,
        "central": 1,
    }
    clients = {name: 100 for name in PARTS} | {"scale": args.scale_clients}

    def settings(name: str) -> dict[str, Any]:
        return workload(
            dataset=args.dataset,
            num_clients=clients[name],
            rounds=rounds[name],
            run_dir=str(workdir / f"run-{name}"),
            seed=args.seed,
        )

    kwargs: dict[str, dict[str, Any]] = {
        "central": {"settings": settings("central"), "repeats": args.repeats},
        "ours": {"settings": settings("ours"), "eval_repeats": args.repeats},
        "ours_tff": {"settings": settings("ours_tff")},
        "scale": {"settings": settings("scale"), "eval_repeats": 1},
        "textbook": {"settings": settings("textbook")},
        "tff": {"settings": settings("tff")},
    }
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    header = [
        machine(),
        f"workload: {args.dataset}, 100 clients (IID), 10 per round, 5 local epochs at batch 10, SGD 0.1, "
        f"MLP (200, 200); started {started}; logs in {workdir}\n",
    ]
    print("\n".join(header), file=sys.stderr if args.json else sys.stdout, flush=True)
    outcomes: dict[str, Outcome] = {}
    start = time.perf_counter()
    for name in PARTS:
        if name in args.skip:
            continue
        print(f"[{name}] {rounds[name]} rounds, {clients[name]} clients ...", file=sys.stderr, flush=True)
        out = run_part(name, kwargs[name], workdir=workdir, timeout=args.timeout)
        outcomes[name] = out
        status = "ok" if out.result is not None else f"FAILED: {out.error}"
        print(f"[{name}] {status} ({out.wall:.0f} s)", file=sys.stderr, flush=True)
    rows = rows_for(outcomes)
    report: list[str] = []
    emit = report.append
    limit = next((r.seconds for r in rows if r.label.startswith("(d) central")), None)
    emit(speed_table(rows, limit))
    emit("x limit: seconds per round / seconds of the (d) Keras model.fit row.\n")
    ours = next((r.seconds for r in rows if r.label.startswith("(a) ours: ")), None)
    ours_train = next((r.seconds for r in rows if r.label.startswith("(a) ours, without")), None)
    tff = next((r.seconds for r in rows if r.label.startswith("(c) TFF")), None)
    if ours is not None and tff is not None and ours_train is not None:
        emit(
            f"ours vs TFF: {ours / tff:.2f}x TFF's seconds per round "
            f"({ours_train / tff:.2f}x without our server eval, which TFF's rounds do not include)\n"
        )
    emit(detail_table(rows) + "\n")
    emit(startup_table(outcomes) + "\n")
    emit(
        "Start-up: seconds from launching the part's process to the end of its round 1 (imports, data, Ray or TFF "
        "start, tracing, round 1). Memory: peak RSS and PSS summed over the part's process tree."
    )
    if "ours" in outcomes or "scale" in outcomes:
        emit(memory_table(outcomes, clients) + "\n")
        emit("RSS and PSS summed over the simulation's process tree (driver, Ray GCS/raylet/workers), 0.5 s samples.")
    for name in ("textbook", "tff"):
        if name in outcomes and rounds[name] != args.rounds:
            emit(f"note: {name} ran {rounds[name]} rounds instead of {args.rounds}")
    for out in outcomes.values():
        if out.leftover:
            emit(f"note: {out.name} left processes behind, terminated: {', '.join(out.leftover)}")
    emit(f"total {time.perf_counter() - start:.0f} s; logs and run directories in {workdir}")
    if not args.json:
        print("\n".join(report))
        return
    write_section(
        args.json,
        name="rounds",
        title=f"Seconds per round on {args.dataset}: McMahan et al.'s FedAvg workload, five implementations",
        command="uv run python -m simulations.bench_federated --skip scale",
        quick=args.quick,
        started=started,
        began=start,
        body=[*header, *report],
        data={name: dataclasses.asdict(out) | {"log": str(out.log)} for name, out in outcomes.items()},
    )


if __name__ == "__main__":
    main()
