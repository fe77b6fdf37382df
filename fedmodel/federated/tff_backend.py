"""``fedmodel simulate --backend tff``: the same experiment on tensorflow-federated 0.87.

TFF's ``tff.learning.algorithms`` run the rounds (weighted FedAvg, FedProx, FedOpt with TFF's optimizers)
on the same zoo model, shards and client batch order as the Flower backend; fedmodel keeps everything
around them: the initial weights (the evaluator's, so both backends start from the same point), server-side
evaluation after every round, the checkpoint, ``run.json`` (with ``"backend": "tff"``), ``diagnostics.json``
and ``report.md``. With client-level DP off, the same seed and every client in every round, both backends
end with the same weights to float32 rounding (``tests/federated/test_tff_backend.py``).

Batch order: a Flower client shuffles each epoch with ``stateless_shuffle(seed=[hash((seed, partition,
round)) mod 2^31, epoch])`` (:class:`~fedmodel.federated.local.LocalTrainer`); :func:`client_dataset` builds
the same batches as a ``tf.data`` pipeline (no Python generator: TFF's C++ runtime cannot run one).

Client-level DP (DP-FedAvg) runs through TFF's own ``DifferentiallyPrivateFactory.gaussian_fixed`` (clip each
update, Gaussian noise once on the sum, divide by ``clients-per-round``) with TFF's unweighted FedAvg/FedProx;
fedmodel samples the clients itself (Poisson or fixed-size, OS entropy) and records every round in the same
ledger as the Flower path, so equal settings give equal epsilon. TFF draws that noise with TensorFlow's
unseeded random ops inside its C++ runtime: fresh per run and per round (tested), not following ``--seed``,
but not fedmodel's OS-entropy generator nor its four-draw floating-point mitigation (docs/privacy.md).

DP-FTRL runs through tensorflow-privacy's tree query inside TFF's ``DifferentiallyPrivateFactory``, restarted on
a fixed period (:func:`_tree_factory`), with the Flower path's participation rule and ledger.

Not on this backend yet (refused with a message): adaptive clipping, local DP, secure aggregation, robust
aggregation, simulated attacks, canary audits and fault injection.

TensorFlow Federated is imported here only, and only when this backend runs. It starts a ``worker_binary``
child process; :func:`run_tff` stops every child it started when the run ends, also on error or Ctrl-C.
Keras models built before TFF traces its model in a v1 graph become unusable, so this module builds TFF's
process first and fedmodel's evaluator after it.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig

#: Strategies with a TFF counterpart (the server optimizer of FedOpt, FedProx's proximal term).
SUPPORTED = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")


def check_tff(config: FederatedConfig) -> None:
    """Refuse settings this backend does not run, naming each (before anything starts)."""
    problems = []
    if config.strategy not in SUPPORTED:
        problems.append(f"strategy {config.strategy!r} (use one of {', '.join(SUPPORTED)})")
    for name, on in (
        ("dp-adaptive", config.dp_adaptive),
        (
            "ftrl-restart-rounds above num-clients // clients-per-round (TFF restarts trees on a fixed period, "
            "so every tree must fit in one pass over the clients)",
            config.dp_ftrl and config.ftrl_rounds_per_tree > max(1, config.num_clients // config.clients_per_round),
        ),
        ("local-dp-noise", config.local_dp_noise is not None),
        ("secure-aggregation", config.secure_aggregation),
        ("norm-bound", config.norm_bound is not None),
        ("attack", config.attack != "none"),
        ("audit-canaries", config.audit_canaries > 0),
        ("fail-partitions", bool(config.failing_partitions)),
    ):
        if on:
            problems.append(name)
    if problems:
        raise ConfigError("the tff backend does not run: " + "; ".join(problems) + " (use --backend flower)")


def client_dataset(config: FederatedConfig, partition: int, server_round: int) -> Any:
    """A client's local epochs as one ``tf.data.Dataset`` of batches, in the Flower client's order."""
    import tensorflow as tf

    from fedmodel.federated.shards import client_shard

    shard = client_shard(config, partition)
    n = len(shard.x_train)
    seed = hash((config.seed, partition, server_round)) % 2**31
    out: Any = None
    for epoch in range(config.local_epochs):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.constant([seed, epoch], tf.int32))
        order = order.numpy()
        x = shard.x_train[order].astype(np.float32)
        y = shard.y_train[order].astype(np.int64)
        part = tf.data.Dataset.from_tensor_slices((x, y)).batch(config.local_batch_size)
        out = part if out is None else out.concatenate(part)
    return out


def _optimizer(tff: Any, name: str, lr: float) -> Any:
    if name == "sgd":
        return tff.learning.optimizers.build_sgdm(learning_rate=lr)
    if name == "momentum":
        return tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=0.9)
    return tff.learning.optimizers.build_adam(learning_rate=lr)


def _tree_factory(tff: Any, config: FederatedConfig, shapes: list[tuple[int, ...]]) -> Any:
    """DP-FTRL's aggregator: tensorflow-privacy's tree query, restarted every ``ftrl_rounds_per_tree`` rounds.

    TFF's ``DifferentiallyPrivateFactory.tree_aggregation`` never restarts and, without a seed, seeds its noise
    from the time of day; here the tree query gets a 63-bit seed from OS entropy (held only in the process's
    in-memory state) and a periodic restart, whose reset keeps the noise generator running (fresh nodes).
    """
    import tensorflow as tf
    import tensorflow_privacy as tfp
    from tensorflow_privacy.privacy.dp_query.restart_query import PeriodicRoundRestartIndicator, RestartQuery

    assert config.dp_noise is not None
    specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
    tree = tfp.TreeResidualSumQuery.build_l2_gaussian_query(
        config.dp_clip, config.dp_noise, specs, noise_seed=secrets.randbits(63), use_efficient=False
    )
    restarting = RestartQuery(tree, PeriodicRoundRestartIndicator(period=config.ftrl_rounds_per_tree))
    query = tfp.NormalizedQuery(restarting, denominator=float(config.clients_per_round))
    return tff.aggregators.DifferentiallyPrivateFactory(query)


def _process(tff: Any, config: FederatedConfig, model_fn: Any, shapes: list[tuple[int, ...]]) -> Any:
    """TFF's learning process; with client-level DP the unweighted variant with TFF's Gaussian DP aggregator."""
    client = _optimizer(tff, config.client_optimizer, config.client_lr)
    opts = tff.learning.optimizers
    server = {
        "fedadam": lambda: opts.build_adam(learning_rate=config.server_lr),
        "fedyogi": lambda: opts.build_yogi(learning_rate=config.server_lr),
        "fedadagrad": lambda: opts.build_adagrad(learning_rate=config.server_lr),
    }.get(config.strategy, lambda: opts.build_sgdm(learning_rate=config.server_lr))()
    algorithms = tff.learning.algorithms
    if config.client_dp:
        assert config.dp_noise is not None
        # clip each update to dp-clip, sum, add N(0, (z C)^2) once, divide by clients-per-round (the expected
        # cohort, as the Flower path's ClientLevelDP does)
        dp = (
            _tree_factory(tff, config, shapes)
            if config.dp_ftrl
            else tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
                noise_multiplier=config.dp_noise, clients_per_round=config.clients_per_round, clip=config.dp_clip
            )
        )
        if config.strategy == "fedprox":
            return algorithms.build_unweighted_fed_prox(
                model_fn,
                proximal_strength=config.proximal_mu,
                client_optimizer_fn=client,
                server_optimizer_fn=server,
                model_aggregator=dp,
            )
        return algorithms.build_unweighted_fed_avg(
            model_fn, client_optimizer_fn=client, server_optimizer_fn=server, model_aggregator=dp
        )
    if config.strategy == "fedprox":
        return algorithms.build_weighted_fed_prox(
            model_fn,
            proximal_strength=config.proximal_mu,
            client_optimizer_fn=client,
            server_optimizer_fn=server,
        )
    return algorithms.build_weighted_fed_avg(model_fn, client_optimizer_fn=client, server_optimizer_fn=server)


def run_tff(config: FederatedConfig, *, run_dir: Path, stream: TextIO | None = None) -> Any:
    """Run (or resume) ``config`` on TFF; returns the server state (see :mod:`fedmodel.federated.server`)."""
    check_tff(config)
    out = stream or sys.stderr
    try:
        return _run(config, run_dir, out)
    finally:
        stopped = stop_children()
        if stopped:
            print(f"stopped TFF's child processes: {', '.join(stopped)}", file=out, flush=True)


def _run(config: FederatedConfig, run_dir: Path, out: TextIO) -> Any:
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedmodel import zoo
    from fedmodel.federated.client_sampling import sample_clients
    from fedmodel.federated.dp_strategy import ClientLevelDP
    from fedmodel.federated.ftrl import TreeDP
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.report import write_report
    from fedmodel.federated.server import (
        BUDGET_ACCOUNTANT,
        budget_allows,
        load_state,
        new_state,
        save_state,
        write_summary,
    )
    from fedmodel.federated.shards import dataset_for
    from fedmodel.privacy import randomness

    data = dataset_for(config)
    info = data.info
    spec = (
        tf.TensorSpec((None, *info.input_shape), tf.float32),
        tf.TensorSpec((None, *np.shape(data.y_test)[1:]), tf.int64),
    )

    def model_fn() -> Any:
        model = zoo.build_model(
            config.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=config.seed, **config.hparams
        )
        return tff.learning.models.from_keras_model(
            model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), input_spec=spec
        )

    start = time.perf_counter()
    # the trainable weights' shapes, for the tree query (a throwaway model: never used after TFF's build)
    probe = zoo.build_model(
        config.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=config.seed, **config.hparams
    )
    shapes = [tuple(int(d) for d in v.shape) for v in probe.trainable_weights]
    del probe
    process = _process(tff, config, model_fn, shapes)
    tff_state = process.initialize()
    # fedmodel's evaluator only now: building TFF's process invalidates Keras models made before it
    evaluator = trainer_for(
        TrainerKey.of(config, input_shape=info.input_shape, num_classes=info.num_classes, proximal_mu=0.0)
    )
    state = load_state(run_dir, config)
    if state is None:
        state = new_state(config, evaluator.model.get_weights())
    else:
        print(f"resuming {run_dir} after round {state.round} (server-optimizer state restarts)", file=out)
    state.backend = "tff"
    tff_state = process.set_model_weights(tff_state, _model_weights(tff, evaluator.model, state.weights))
    print(f"TFF {tff.__version__}: process built in {time.perf_counter() - start:.1f} s", file=out, flush=True)
    strategy = state.strategy
    for rnd in range(state.round + 1, config.rounds + 1):
        if not budget_allows(config, state):
            state.stop_reason = (
                f"stopped before round {rnd}: it would exceed target epsilon {config.target_epsilon} "
                f"at delta {config.delta}"
            )
            print(state.stop_reason, file=out)
            break
        began = time.perf_counter()
        if isinstance(strategy, TreeDP):  # each client at most once per tree, trees on TFF's fixed period
            chosen = strategy.sample_nodes(_Partitions(config.num_clients))  # type: ignore[arg-type]
            strategy.steps_in_tree += 1
        elif isinstance(strategy, ClientLevelDP):  # as the accountant assumes, from OS entropy
            chosen = sample_clients(range(config.num_clients), strategy.config.sampling, rng=randomness.numpy_rng())
        else:
            chosen = _clients(config, rnd)
        result = process.next(tff_state, [client_dataset(config, p, rnd) for p in chosen])
        if state.ledger is not None and isinstance(strategy, ClientLevelDP):
            state.ledger.record_release(strategy.config.round_event(), strategy.charge_sampling(), epoch=rnd)
        tff_state = result.state
        process.get_model_weights(tff_state).assign_weights_to(evaluator.model)
        weights = [w.copy() for w in evaluator.model.get_weights()]
        central = evaluator.evaluate(weights, data.x_test, data.y_test, task=info.task, detailed=False)
        row = {"round": rnd, "loss": central["loss"], "accuracy": central["accuracy"], "sampled": len(chosen)}
        if state.ledger is not None:
            row["epsilon"] = state.ledger.epsilon(config.delta, BUDGET_ACCOUNTANT)
        train = dict(result.metrics["client_work"]["train"])
        diag = {
            "round": rnd,
            "replies": len(chosen),
            "failures": 0,
            "train_loss": float(train.get("loss", float("nan"))),
            "seconds": time.perf_counter() - began,
        }
        if not config.dp_outputs_only:
            state.diagnostics.append(diag)
        state.history.append(row)
        state.round, state.weights = rnd, weights
        save_state(run_dir, state)
        write_summary(run_dir, config, state, final=False)
        eps = f"  epsilon {row['epsilon']:.4f}" if "epsilon" in row else ""
        print(
            f"round {rnd:>3}  loss {row['loss']:.4f}  accuracy {row['accuracy']:.4f}{eps}  sampled {len(chosen)}  "
            f"| not DP: train_loss {diag['train_loss']:.4f}  seconds {diag['seconds']:.4f}",
            file=out,
            flush=True,
        )
    state.final_metrics = evaluator.evaluate(state.weights, data.x_test, data.y_test, task=info.task)
    write_summary(run_dir, config, state)
    write_report(run_dir)
    return state


class _Partitions:
    """The simulated clients as a Grid's node ids (for DP-FTRL's participation rule)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(self.n))


def _clients(config: FederatedConfig, server_round: int) -> list[int]:
    """The round's partitions: all of them, or ``clients_per_round`` drawn with the run's seed (no DP here)."""
    if config.clients_per_round >= config.num_clients:
        return list(range(config.num_clients))
    rng = np.random.default_rng([config.seed, server_round])
    return sorted(int(p) for p in rng.choice(config.num_clients, config.clients_per_round, replace=False))


def _model_weights(tff: Any, model: Any, weights: list[np.ndarray]) -> Any:
    """``weights`` (Keras ``get_weights`` order) as TFF's ModelWeights of ``model``."""
    model.set_weights(weights)
    return tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in model.trainable_weights],
        non_trainable=[v.numpy() for v in model.non_trainable_weights],
    )


def stop_children() -> list[str]:
    """Terminate this process's children (TFF's ``worker_binary``); their names and pids."""
    import psutil

    children = psutil.Process().children(recursive=True)
    names = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            names.append(f"{child.name()} ({child.pid})")
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    return names
