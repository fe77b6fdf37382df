"""The federated server loop: Flower strategy hooks, round by round, with what a run needs around them.

Each round:

1. stop first if the privacy budget does not allow another noisy round (fail closed);
2. the strategy configures training and the Grid sends it to the sampled clients;
3. replies are audited: only arrays shaped like the model's weights and scalar metrics are accepted;
4. the strategy aggregates (for client-level DP: clip, noise, divide; the ledger records the round);
5. the new global model is evaluated on the server's held-out test set, then on the clients (federated
   evaluation, weighted by example count);
6. a checkpoint (weights, strategy state with any server-optimizer moments, ledger, history) is written,
   so a restarted server resumes at the next round.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.local import TrainerKey, trainer_for
from fedmodel.federated.shards import dataset_for
from fedmodel.federated.strategies import make_strategy
from fedmodel.federated.weights import same_shapes
from fedmodel.privacy.accounting import ACCOUNTANTS
from fedmodel.privacy.ledger import PrivacyLedger, remaining_steps
from fedmodel.rundir import versions, write_json

CHECKPOINT = "checkpoint.pkl"


@dataclasses.dataclass
class ServerState:
    """Everything a restarted server needs to continue."""

    round: int
    weights: list[np.ndarray]
    strategy: Strategy
    ledger: PrivacyLedger | None
    history: list[dict[str, Any]]
    rejected_replies: int = 0
    stop_reason: str | None = None
    final_metrics: dict[str, Any] | None = None
    seen: dict[str, set[str]] = dataclasses.field(default_factory=lambda: {"records": set(), "metrics": set()})


def audit_replies(
    replies: Iterable[Message], reference: list[np.ndarray], seen: dict[str, set[str]] | None = None
) -> tuple[list[Message], int]:
    """Keep replies that carry only weight-shaped arrays and scalar metrics; count the rest.

    ``seen`` collects the record names and metric names that arrived, for the run's reply audit.
    """
    kept, rejected = [], 0
    for reply in replies:
        if reply.has_error():
            kept.append(reply)  # strategies count and log errors themselves
            continue
        content = reply.content
        if seen is not None:
            seen["records"].update(f"arrays:{name}" for name in content.array_records)
            seen["records"].update(f"metrics:{name}" for name in content.metric_records)
            seen["records"].update(f"config:{name}" for name in content.config_records)
            seen["metrics"].update(k for record in content.metric_records.values() for k in record)
        arrays = content.array_records["arrays"].to_numpy_ndarrays() if "arrays" in content.array_records else []
        arrays_ok = set(content.array_records) == {"arrays"} and same_shapes(arrays, reference)
        finite = arrays_ok and all(np.isfinite(a).all() for a in arrays)
        metrics_ok = all(
            isinstance(v, int | float) for record in content.metric_records.values() for v in record.values()
        )
        if arrays_ok and finite and metrics_ok and not content.config_records:
            kept.append(reply)
        else:
            rejected += 1
    return kept, rejected


def _z_effective(strategy: Strategy) -> float | None:
    return strategy.config.effective_noise_multiplier if isinstance(strategy, ClientLevelDP) else None


def new_state(config: FederatedConfig, initial: list[np.ndarray]) -> ServerState:
    strategy = make_strategy(config)
    ledger = None
    if config.client_dp:
        ledger = PrivacyLedger(
            unit="client",
            population=config.num_clients,
            sampling="fixed-size",
            delta=config.delta,
            notes=[
                f"clip {config.dp_clip}" + (" (adaptive)" if config.dp_adaptive else ""),
                f"noise_multiplier {config.dp_noise}",
                f"{config.clients_per_round} of {config.num_clients} clients per round (Flower samples a fixed "
                "number; the accounting assumes Poisson sampling at q = clients_per_round / clients)",
            ],
        )
    return ServerState(round=0, weights=initial, strategy=strategy, ledger=ledger, history=[])


def load_checkpoint(run_dir: Path) -> ServerState | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    with path.open("rb") as f:
        state: ServerState = pickle.load(f)
    return state


def save_checkpoint(run_dir: Path, state: ServerState) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    with tmp.open("wb") as f:
        pickle.dump(state, f)
    tmp.replace(run_dir / CHECKPOINT)
    if state.ledger is not None:
        state.ledger.save(run_dir)


def _budget_allows(config: FederatedConfig, state: ServerState) -> bool:
    z = _z_effective(state.strategy)
    if state.ledger is None or config.target_epsilon is None or z is None:
        return True
    return (
        remaining_steps(
            state.ledger,
            noise_multiplier=z,
            sampling_rate=config.sampling_rate,
            delta=config.delta,
            target_epsilon=config.target_epsilon,
        )
        >= 1
    )


def _scalar(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _fmt(row: dict[str, Any]) -> str:
    parts = [f"round {row['round']:>3}"]
    for key in ("loss", "accuracy", "fed_accuracy", "epsilon", "replies", "seconds"):
        value = row.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def run_server(
    grid: Grid,
    config: FederatedConfig,
    *,
    run_dir: Path,
    timeout: float = 3600.0,
    stream: TextIO | None = None,
) -> ServerState:
    """Run (or resume) the rounds of ``config``, checkpointing into ``run_dir``; see the module docstring."""
    out = stream or sys.stderr
    data = dataset_for(config)
    evaluator = trainer_for(
        TrainerKey.of(
            config.without_local_dp(),
            input_shape=data.info.input_shape,
            num_classes=data.info.num_classes,
            proximal_mu=0.0,
        )
    )
    state = load_checkpoint(run_dir)
    if state is None:
        state = new_state(config, evaluator.model.get_weights())
    elif state.round >= config.rounds:
        print(f"run in {run_dir} already finished {state.round} rounds", file=out)
        return state
    else:
        print(f"resuming {run_dir} after round {state.round}", file=out)
    reference = [np.asarray(w) for w in state.weights]
    arrays = ArrayRecord(state.weights)
    for rnd in range(state.round + 1, config.rounds + 1):
        if not _budget_allows(config, state):  # 1.
            state.stop_reason = (
                f"stopped before round {rnd}: it would exceed target epsilon {config.target_epsilon} "
                f"at delta {config.delta}"
            )
            print(state.stop_reason, file=out)
            break
        start = time.perf_counter()
        messages = state.strategy.configure_train(rnd, arrays, ConfigRecord(), grid)  # 2.
        received = grid.send_and_receive(messages, timeout=timeout)
        replies, rejected = audit_replies(received, reference, state.seen)  # 3.
        state.rejected_replies += rejected
        aggregated, train_metrics = state.strategy.aggregate_train(rnd, replies)  # 4.
        z = _z_effective(state.strategy)
        if state.ledger is not None and z is not None:
            state.ledger.record(noise_multiplier=z, sampling_rate=config.sampling_rate, epoch=rnd)
        if aggregated is not None:
            arrays = aggregated
        weights = arrays.to_numpy_ndarrays()
        central = evaluator.evaluate(weights, data.x_test, data.y_test, task=data.info.task, detailed=False)  # 5.
        fed = None
        if config.fraction_evaluate > 0:
            eval_messages = state.strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid)
            fed = state.strategy.aggregate_evaluate(rnd, grid.send_and_receive(eval_messages, timeout=timeout))
        row: dict[str, Any] = {
            "round": rnd,
            "loss": central["loss"],
            "accuracy": central["accuracy"],
            "replies": sum(1 for r in replies if not r.has_error()),
            "failures": sum(1 for r in replies if r.has_error()),
            "rejected": rejected,
            "seconds": time.perf_counter() - start,
        }
        if fed is not None:
            row["fed_accuracy"] = _scalar(fed.get("eval_accuracy"))
            row["fed_loss"] = _scalar(fed.get("eval_loss"))
        if train_metrics is not None:
            row.update({k: float(v) for k, v in train_metrics.items() if isinstance(v, int | float)})
        if state.ledger is not None:
            row["epsilon"] = state.ledger.epsilon(config.delta, "rdp")
            if isinstance(state.strategy, ClientLevelDP):
                row["clip"] = state.strategy.clip
        state.history.append(row)
        state.round, state.weights = rnd, weights
        save_checkpoint(run_dir, state)  # 6.
        write_summary(run_dir, config, state, final=False)
        print(_fmt(row), file=out, flush=True)
    state.final_metrics = evaluator.evaluate(state.weights, data.x_test, data.y_test, task=data.info.task)
    write_summary(run_dir, config, state)
    return state


def write_summary(run_dir: Path, config: FederatedConfig, state: ServerState, *, final: bool = True) -> None:
    """``run.json`` (config, versions, rounds, privacy) and, at the end, the final model weights."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if final:  # during the run the checkpoint holds the weights
        np.savez(run_dir / "weights.npz", *state.weights)
    privacy = None
    if state.ledger is not None:
        privacy = {
            "unit": "client",
            "epsilon": {a: state.ledger.epsilon(config.delta, a) for a in ACCOUNTANTS} if state.ledger.steps else {},
            "delta": config.delta,
            "noise_multiplier": config.dp_noise,
            "effective_noise_multiplier": _z_effective(state.strategy),
            "sampling_rate": config.sampling_rate,
            "rounds": state.ledger.steps,
            "sampling": "fixed-size (accounted as Poisson at the same q)",
            "stopped_by_budget": state.stop_reason is not None,
        }
    write_json(
        run_dir / "run.json",
        {
            "kind": "federated",
            "config": config.to_dict(),
            "rounds_run": state.round,
            "rounds": state.history,
            "final": state.history[-1] if state.history else None,
            "test_metrics": state.final_metrics,
            "privacy": privacy,
            "rejected_replies": state.rejected_replies,
            "reply_audit": {
                "records": sorted(state.seen["records"]),
                "metrics": sorted(state.seen["metrics"]),
                "weight_shapes": [list(np.shape(w)) for w in state.weights],
            },
            "stop_reason": state.stop_reason,
            "versions": versions(),
        },
    )


def check_run_dir(run_dir: Path, config: FederatedConfig) -> None:
    """Refuse to resume a run directory written by a different configuration."""
    record = run_dir / "run.json"
    if not record.is_file():
        return
    saved = json.loads(record.read_text()).get("config", {})
    mine = json.loads(json.dumps(config.to_dict(), default=list))
    ignored = {"rounds", "run_dir", "fail_partitions"}
    diff = sorted(k for k in mine if k not in ignored and saved.get(k) != mine[k])
    if diff:
        raise ConfigError(
            f"run directory {run_dir} holds a run with other settings ({', '.join(diff)}); pass a new run-dir"
        )
