"""The federated server loop: Flower strategy hooks, round by round, with what a run needs around them.

Each round:

1. stop first if the privacy budget does not allow another noisy round (fail closed);
2. the strategy configures training and the Grid sends it to the sampled clients;
3. replies are audited: only arrays shaped like the model's weights and scalar metrics are accepted;
4. the strategy aggregates (for client-level DP: clip, noise, divide; the ledger records the round);
5. the new global model is evaluated on the server's held-out test set, then on the clients (federated
   evaluation, weighted by example count);
6. a checkpoint (weights, server-optimizer moments, adaptive clip, ledger, history; see
   :mod:`.checkpoint`) is written, so a restarted server resumes at the next round.

What the run writes is split by what the privacy ledger covers (``docs/privacy.md`` lists every output):
``run.json`` holds the configuration and the DP-covered outputs (per round: server-side test loss and
accuracy of the released model, epsilon, the clip, how many clients were sampled);
``diagnostics.json`` holds what was computed on the clients' data without noise (client training
metrics, federated evaluation, replies and failures, local epsilons, clipped counts) and says so. With
``dp-outputs-only`` the diagnostics are neither computed on the server nor written nor printed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedmodel.audit.federated import SCORE as CANARY_SCORE
from fedmodel.audit.federated import CanaryClients
from fedmodel.audit.record import NON_PRIVATE_DELTA, one_run_record, tightest_claim, update_audit_file
from fedmodel.errors import ConfigError
from fedmodel.federated import checkpoint
from fedmodel.federated.client_sampling import QuorumError, SampledGrid, wait_for_nodes
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.local import TrainerKey, trainer_for
from fedmodel.federated.node_data import DataSpec
from fedmodel.federated.secagg import SecureRound, mechanism_for
from fedmodel.federated.shards import dataset_for
from fedmodel.federated.strategies import make_strategy
from fedmodel.federated.weights import same_shapes
from fedmodel.privacy.accounting import AccountantName, AccountingError, FixedSizeSampling, rdp_epsilon
from fedmodel.privacy.distributed_dp import ORDERS
from fedmodel.privacy.ledger import PrivacyLedger, remaining_steps
from fedmodel.rundir import versions, write_json

DIAGNOSTICS = "diagnostics.json"
#: Settings a resumed run may change (a deployment that lost a node may lower its quorum).
QUORUM_SETTINGS = ("min_available_clients", "available_timeout", "reply_timeout", "min_replies")
#: Enforces target-epsilon and labels per-round epsilon: RDP, the one accountant that also bounds fixed-size sampling.
BUDGET_ACCOUNTANT: AccountantName = "rdp"
LOCAL_EPSILON = "local-epsilon"
#: A deployed client's reply metric saying that it trained on its own node-local data file.
NODE_LOCAL_DATA = "node-local-data"
#: Per-round values computed on the clients' data without noise (never in run.json).
DIAGNOSTIC_NOTE = (
    "Computed on the clients' private data WITHOUT noise: not covered by the privacy ledger or its epsilon. "
    "Do not publish these beside a DP model; run with dp-outputs-only = true to not produce them."
)


@dataclasses.dataclass
class ServerState:
    """Everything a restarted server needs to continue (saved by :mod:`.checkpoint`, never pickled)."""

    round: int
    weights: list[np.ndarray]
    strategy: Strategy
    ledger: PrivacyLedger | None
    history: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rejected_replies: int = 0
    stop_reason: str | None = None
    failed: bool = False
    failed_rounds: list[int] = dataclasses.field(default_factory=list)
    final_metrics: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    backend: str = "flower"
    seen: dict[str, set[str]] = dataclasses.field(default_factory=lambda: {"records": set(), "metrics": set()})


def audit_replies(
    replies: Iterable[Message],
    reference: list[np.ndarray],
    seen: dict[str, set[str]] | None = None,
    reasons: list[str] | None = None,
) -> tuple[list[Message], int]:
    """Keep replies that carry only weight-shaped arrays and scalar metrics; count the rest.

    ``seen`` collects the record names and metric names that arrived, for the run's reply audit;
    ``reasons`` receives one line per rejected reply (node id and what was wrong, never its values).
    """
    kept, rejected = [], 0
    for reply in replies:
        if reply.has_error():
            kept.append(reply)  # strategies count and log errors themselves
            continue
        content = reply.content
        if seen is not None:
            note_records(reply, seen)
        why = _reply_problem(content, reference)
        if why is None:
            kept.append(reply)
        else:
            rejected += 1
            if reasons is not None:
                reasons.append(f"node {reply.metadata.src_node_id}: {why}")
    return kept, rejected


def note_records(reply: Message, seen: dict[str, set[str]]) -> None:
    """Add the names of a reply's records and metrics to the run's reply audit (never their values)."""
    if reply.has_error():
        return
    content = reply.content
    seen["records"].update(f"arrays:{name}" for name in content.array_records)
    seen["records"].update(f"metrics:{name}" for name in content.metric_records)
    seen["records"].update(f"config:{name}" for name in content.config_records)
    seen["metrics"].update(k for record in content.metric_records.values() for k in record)


def _reply_problem(content: Any, reference: list[np.ndarray]) -> str | None:
    """Why a reply cannot be aggregated (``None``: it can)."""
    extra = sorted(
        [f"arrays:{n}" for n in content.array_records if n != "arrays"]
        + [f"config:{n}" for n in content.config_records]
        + [f"metrics:{n}" for n in content.metric_records if n != "metrics"]
    )
    if extra:
        return f"unexpected records {', '.join(extra)}"
    if "arrays" not in content.array_records:
        return "no arrays record"
    arrays = content.array_records["arrays"].to_numpy_ndarrays()
    if not same_shapes(arrays, reference):
        got = [f"{a.dtype}{list(a.shape)}" for a in arrays]
        want = [f"{r.dtype}{list(r.shape)}" for r in reference]
        return f"arrays {got} do not match the model's weights {want}"
    if not all(np.isfinite(a).all() for a in arrays):
        return "arrays hold NaN or Inf"
    bad = sorted(
        k for record in content.metric_records.values() for k, v in record.items() if not isinstance(v, int | float)
    )
    if bad:
        return f"non-scalar metrics {', '.join(bad)}"
    return None


_CODE = re.compile(r"fedmodel/([a-z][a-z0-9-]*): ")


def failure_code(reply: Message) -> str:
    """The short code of a client's error reply (``fedmodel/CODE: message``), else Flower's error code."""
    if not reply.has_error():
        return "none"
    codes = _CODE.findall(reply.error.reason or "")
    return codes[-1] if codes else f"flower-{reply.error.code}"


#: Seconds between asks for replies (Flower's GrpcGrid.send_and_receive waits 3 s between asks).
REPLY_POLL = 0.2


def send_and_receive(grid: Grid, messages: list[Message], *, timeout: float, poll: float = REPLY_POLL) -> list[Message]:
    """Flower's ``send_and_receive`` (push, then pull until every reply is in or ``timeout`` passes), asking
    every ``poll`` seconds instead of every 3: in a deployment that is up to 3 s saved per message round."""
    if not messages:
        return []
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting.difference_update(m.metadata.reply_to_message_id for m in arrived)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return replies


def sampling_description(config: FederatedConfig) -> str:
    """How clients were drawn and which bound the ledger uses, in one line (for run.json and reports)."""
    if config.dp_ftrl:
        return (
            f"DP-FTRL: no sampling; up to {config.clients_per_round} available clients per round, each at most once "
            f"per tree, a new tree every {config.ftrl_rounds_per_tree} rounds (or when all have taken part); bound: "
            "tree aggregation (Kairouz et al. 2021, dp-accounting's SingleEpochTreeAggregationDpEvent per tree) "
            "under replace-one-client-with-zero adjacency"
        )
    if config.client_sampling == "fixed-size":
        return (
            f"fixed-size: exactly {config.clients_per_round} of {config.num_clients} clients per round, uniformly "
            "without replacement; bound: RDP of sampling without replacement (Wang et al. 2019) under "
            "replace-one-client adjacency (sensitivity 2 x clip)"
        )
    return (
        f"poisson: each client joins each round independently with probability q = {config.sampling_rate:.6g}; "
        "bound: Poisson-subsampled Gaussian under add-or-remove-one-client adjacency"
    )


def new_state(
    config: FederatedConfig, initial: list[np.ndarray], *, rng: np.random.Generator | None = None
) -> ServerState:
    """A fresh run's state (``rng`` replaces the DP wrapper's OS-entropy generator: tests only)."""
    strategy = make_strategy(config, rng=rng)
    ledger = None
    if config.client_dp:
        ledger = PrivacyLedger(
            unit="client",
            population=config.num_clients,
            sampling="tree" if config.dp_ftrl else config.client_sampling,
            delta=config.delta,
            notes=[
                f"dp-clip {config.dp_clip}" + (" (adaptive)" if config.dp_adaptive else ""),
                f"dp-noise {config.dp_noise}",
                f"client sampling {sampling_description(config)}",
                *(
                    ["secure aggregation: distributed discrete Gaussian; rounds charged without sampling amplification"]
                    if config.secure_aggregation
                    else []
                ),
            ],
        )
    return ServerState(round=0, weights=initial, strategy=strategy, ledger=ledger, history=[])


def load_state(run_dir: Path, config: FederatedConfig) -> ServerState | None:
    """The state saved after the last finished round, with a fresh strategy (fresh randomness)."""
    saved = checkpoint.load(run_dir)
    if saved is None:
        return None
    document, weights, strategy_arrays = saved
    state = new_state(config, weights)
    checkpoint.restore_strategy_arrays(state.strategy, strategy_arrays)
    if isinstance(state.strategy, ClientLevelDP) and document.get("dp"):
        state.strategy.restore(document["dp"])
    if document.get("ledger") is not None:
        state.ledger = PrivacyLedger.from_dict(document["ledger"])
    state.round = int(document["round"])
    state.history = list(document.get("history", []))
    state.diagnostics = list(document.get("diagnostics", []))
    state.rejected_replies = int(document.get("rejected_replies", 0))
    state.failed_rounds = [int(r) for r in document.get("failed_rounds", [])]
    state.seen = {k: set(v) for k, v in document.get("seen", {"records": [], "metrics": []}).items()}
    return state


def save_state(run_dir: Path, state: ServerState) -> None:
    checkpoint.save(
        run_dir,
        round_=state.round,
        weights=state.weights,
        strategy=state.strategy,
        ledger=state.ledger,
        document={
            "history": state.history,
            "diagnostics": state.diagnostics,
            "rejected_replies": state.rejected_replies,
            "failed_rounds": state.failed_rounds,
            "seen": {k: sorted(v) for k, v in state.seen.items()},
        },
    )
    if state.ledger is not None:
        state.ledger.save(run_dir)


def budget_allows(config: FederatedConfig, state: ServerState) -> bool:
    strategy = state.strategy
    if state.ledger is None or config.target_epsilon is None or not isinstance(strategy, ClientLevelDP):
        return True
    event, sampling = strategy.config.round_event(), strategy.next_sampling()
    if config.dp_ftrl:  # a tree's rounds share nodes: charge the next round exactly, in a copy of the ledger
        trial = PrivacyLedger.from_dict(state.ledger.to_dict())
        trial.record_release(event, sampling, epoch=state.round + 1)
        return trial.epsilon(config.delta, BUDGET_ACCOUNTANT) <= config.target_epsilon
    if config.secure_aggregation:  # planned with the fewest survivors a round may have
        event = mechanism_for(config, dim=sum(int(np.size(w)) for w in state.weights)).event()
        sampling = cohort_sampling(config)
    return (
        remaining_steps(
            state.ledger,
            event=event,
            sampling=sampling,
            delta=config.delta,
            target_epsilon=config.target_epsilon,
            accountant=BUDGET_ACCOUNTANT,
        )
        >= 1
    )


def _scalar(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def local_epsilons(replies: Iterable[Message]) -> list[float]:
    """Each replying client's own example-level epsilon (local DP-SGD), as it reported it."""
    out = []
    for reply in replies:
        if reply.has_error():
            continue
        for record in reply.content.metric_records.values():
            value = record.get(LOCAL_EPSILON)
            if isinstance(value, int | float):
                out.append(float(value))
    return out


def _fmt(row: dict[str, Any], diagnostics: dict[str, Any] | None) -> str:
    parts = [f"round {row['round']:>3}"]
    for key in ("loss", "accuracy", "epsilon", "sampled", "survivors"):
        value = row.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    if diagnostics:
        extra = [
            f"{key} {diagnostics[key]:.4f}" if isinstance(diagnostics[key], float) else f"{key} {diagnostics[key]}"
            for key in ("fed_accuracy", "replies", "failures", "rejected", "dropped", "seconds")
            if diagnostics.get(key) not in (None, 0, [])  # rejected/dropped only when there were some
            or key in ("replies", "failures")
        ]
        if extra:
            parts.append("| not DP: " + "  ".join(extra))
    return "  ".join(parts)


def run_server(
    grid: Grid,
    config: FederatedConfig,
    *,
    run_dir: Path,
    timeout: float | None = None,
    stream: TextIO | None = None,
) -> ServerState:
    """Run (or resume) the rounds of ``config``, checkpointing into ``run_dir``; see the module docstring.

    ``timeout`` overrides ``config.reply_timeout``. A run that cannot reach its quorum of connected
    clients stops with ``state.failed`` set (the caller turns it into a failed exit status).
    """
    out = stream or sys.stderr
    reply_timeout = config.reply_timeout if timeout is None else timeout
    data = dataset_for(config)
    spec = DataSpec.of(data)
    evaluator = trainer_for(
        TrainerKey.of(
            config.without_local_dp(),
            input_shape=data.info.input_shape,
            num_classes=data.info.num_classes,
            proximal_mu=0.0,
        )
    )
    state = load_state(run_dir, config)
    if state is None:
        state = new_state(config, evaluator.model.get_weights())
    elif state.round >= config.rounds:
        print(f"run in {run_dir} already finished {state.round} rounds", file=out)
        return state
    else:
        print(f"resuming {run_dir} after round {state.round} (fresh noise and sampling randomness)", file=out)

    def log(text: str) -> None:
        print(text, file=out, flush=True)

    reference = [np.asarray(w) for w in state.weights]
    canaries = (
        CanaryClients.for_run(run_dir, config.audit_canaries, rate=config.sampling_rate, initial=state.weights)
        if config.audit_canaries
        else None
    )
    arrays = ArrayRecord(state.weights)
    secure = (
        SecureRound(
            config,
            mechanism_for(config, dim=sum(int(np.size(w)) for w in state.weights)),
            send=send_and_receive,
            timeout=reply_timeout,
        )
        if config.secure_aggregation
        else None
    )
    keep_diagnostics = not config.dp_outputs_only
    round_config = spec.to_config()
    for rnd in range(state.round + 1, config.rounds + 1):
        if not budget_allows(config, state):  # 1.
            state.stop_reason = (
                f"stopped before round {rnd}: it would exceed target epsilon {config.target_epsilon} "
                f"at delta {config.delta}"
            )
            print(state.stop_reason, file=out)
            break
        start = time.perf_counter()
        try:
            available = wait_for_nodes(grid, config.quorum, timeout=config.available_timeout, log=log)
        except QuorumError as err:
            state.stop_reason, state.failed = f"round {rnd} failed: {err}", True
            print(state.stop_reason, file=out)
            break
        view: Any = SampledGrid(grid, available)
        messages = list(state.strategy.configure_train(rnd, arrays, ConfigRecord(round_config), view))  # 2.
        if secure is not None:  # 2.-4. through SecAgg+: the server sees only the noised sum
            arrays, secure_row = _secure_step(secure, grid, state, rnd, messages, arrays, log)
            _finish_round(run_dir, config, state, evaluator, data, secure_row, arrays, start, out)
            continue
        sampled = state.strategy.last_sampled if isinstance(state.strategy, ClientLevelDP) else len(messages)
        received = send_and_receive(grid, messages, timeout=reply_timeout)
        reasons: list[str] = []
        replies, rejected = audit_replies(received, reference, state.seen, reasons)  # 3.
        for reason in reasons:
            log(f"round {rnd}: rejected a reply: {reason}")
        state.rejected_replies += rejected
        good = sum(1 for r in replies if not r.has_error())
        needed = min(config.min_replies, sampled)
        row: dict[str, Any] = {"round": rnd}
        train_metrics: Any = None
        if good >= needed:
            if canaries is None:
                aggregated, train_metrics = state.strategy.aggregate_train(rnd, replies)  # 4.
            else:  # audit: the included canaries that take part this round reply like clients
                clip = state.strategy.clip if isinstance(state.strategy, ClientLevelDP) else None
                extra = canaries.replies(current=arrays, real=replies, clip=clip)
                aggregated, _ = state.strategy.aggregate_train(rnd, replies + extra)
                train_metrics = real_train_metrics(replies)
            if state.ledger is not None and isinstance(state.strategy, ClientLevelDP):
                release = state.strategy.last_release
                assert release is not None  # aggregate_train always releases
                state.ledger.record_release(release.event, release.sampling, epoch=rnd)
            if aggregated is not None:
                arrays = aggregated
        else:  # below quorum: no model update; a DP round is charged all the same (never undercount)
            row["failed"] = True
            state.failed_rounds.append(rnd)
            log(
                f"round {rnd} failed: {good} of {sampled} sampled clients replied usably, min-replies needs "
                f"{needed}; the model is unchanged"
            )
            if state.ledger is not None and isinstance(state.strategy, ClientLevelDP):
                state.ledger.record_release(
                    state.strategy.config.round_event(), state.strategy.charge_sampling(), epoch=rnd
                )
        weights = arrays.to_numpy_ndarrays()
        central = evaluator.evaluate(weights, data.x_test, data.y_test, task=data.info.task, detailed=False)  # 5.
        row.update({"loss": central["loss"], "accuracy": central["accuracy"], "sampled": sampled})
        if state.ledger is not None:
            row["epsilon"] = state.ledger.epsilon(config.delta, BUDGET_ACCOUNTANT)
            if isinstance(state.strategy, ClientLevelDP) and state.strategy.last_release is not None:
                row["clip"] = state.strategy.last_release.clip
        diag: dict[str, Any] | None = None
        if keep_diagnostics:
            diag = round_diagnostics(rnd, replies, rejected, train_metrics, state.strategy)
            repliers = {int(r.metadata.src_node_id) for r in received}
            diag["dropped"] = sorted(
                int(m.metadata.dst_node_id) for m in messages if m.metadata.dst_node_id not in repliers
            )
            if reasons:
                diag["rejected_reasons"] = reasons
            if config.federated_evaluation:
                eval_messages = state.strategy.configure_evaluate(rnd, arrays, ConfigRecord(round_config), view)
                fed = state.strategy.aggregate_evaluate(
                    rnd, send_and_receive(grid, list(eval_messages), timeout=reply_timeout)
                )
                if fed is not None:
                    diag["fed_accuracy"] = _scalar(fed.get("eval_accuracy"))
                    diag["fed_loss"] = _scalar(fed.get("eval_loss"))
            diag["seconds"] = time.perf_counter() - start
            state.diagnostics.append(diag)
        state.history.append(row)
        state.round, state.weights = rnd, weights
        save_state(run_dir, state)  # 6.
        write_summary(run_dir, config, state, final=False)
        print(_fmt(row, diag), file=out, flush=True)
    state.final_metrics = evaluator.evaluate(state.weights, data.x_test, data.y_test, task=data.info.task)
    if canaries is not None and not state.failed:
        state.audit = audit_canaries(config, state, canaries, run_dir)
        log(f"audit: {state.audit['meaning']}")
    write_summary(run_dir, config, state)
    return state


def cohort_sampling(config: FederatedConfig) -> FixedSizeSampling:
    """What the ledger charges a secure round as: the cohort, with no amplification by sampling claimed."""
    return FixedSizeSampling(population=config.clients_per_round, size=config.clients_per_round)


def _secure_step(
    secure: SecureRound,
    grid: Grid,
    state: ServerState,
    rnd: int,
    messages: list[Message],
    arrays: ArrayRecord,
    log: Any,
) -> tuple[ArrayRecord, dict[str, Any]]:
    """One SecAgg+ round: the new model and the round's row (charged only if the sum was unmasked)."""
    config = secure.config
    nodes = [int(m.metadata.dst_node_id) for m in messages]
    round_config = dict(messages[0].content.config_records["config"]) if messages else {}
    outcome = secure.run(grid, rnd, nodes, arrays.to_numpy_ndarrays(), round_config)
    for reply in secure.last_grid.seen if secure.last_grid else []:
        note_records(reply, state.seen)  # what reached the server: SecAgg+ records, no training metric
    row: dict[str, Any] = {"round": rnd, "sampled": outcome.sampled, "survivors": outcome.survivors}
    if outcome.total is None:
        row["failed"] = True
        state.failed_rounds.append(rnd)
        log(f"round {rnd} aborted: {outcome.aborted}; the model is unchanged and nothing was released")
        return arrays, row
    assert isinstance(state.strategy, ClientLevelDP)
    # the cohort size is public and fixed: the mean's denominator does not depend on who dropped out
    mean = [t / config.clients_per_round for t in outcome.total]
    aggregated = state.strategy.apply_mean(rnd, mean)
    if state.ledger is not None:
        # the noise actually present: every survivor's share but the target's own
        event = secure.mechanism.event(shares=outcome.survivors - 1)
        state.ledger.record_release(event, cohort_sampling(config), epoch=rnd)
    return (aggregated if aggregated is not None else arrays), row


def _finish_round(
    run_dir: Path,
    config: FederatedConfig,
    state: ServerState,
    evaluator: Any,
    data: Any,
    row: dict[str, Any],
    arrays: ArrayRecord,
    start: float,
    out: TextIO,
) -> None:
    """Evaluate the released model on the server's test set, record the round and checkpoint (5.-6.)."""
    weights = arrays.to_numpy_ndarrays()
    central = evaluator.evaluate(weights, data.x_test, data.y_test, task=data.info.task, detailed=False)
    row.update({"loss": central["loss"], "accuracy": central["accuracy"]})
    if state.ledger is not None:
        row["epsilon"] = state.ledger.epsilon(config.delta, BUDGET_ACCOUNTANT)
    diag: dict[str, Any] | None = None
    if not config.dp_outputs_only:
        # counts only: under secure aggregation no client sends a metric
        survivors = int(row.get("survivors", 0))
        diag = {
            "round": row["round"],
            "replies": survivors,
            "failures": int(row.get("sampled", 0)) - survivors,
            "seconds": time.perf_counter() - start,
        }
        state.diagnostics.append(diag)
    state.history.append(row)
    state.round, state.weights = row["round"], weights
    save_state(run_dir, state)
    write_summary(run_dir, config, state, final=False)
    print(_fmt(row, diag), file=out, flush=True)


def real_train_metrics(replies: list[Message]) -> Any:
    """Training metrics of the real clients' replies (canaries excluded), weighted by their examples."""
    contents = [r.content for r in replies if not r.has_error() and r.content.metric_records]
    return aggregate_metricrecords(contents, "num-examples") if contents else None


def audit_canaries(
    config: FederatedConfig, state: ServerState, canaries: CanaryClients, run_dir: Path
) -> dict[str, Any]:
    """Score the client canaries on the final model; ``audit.json``'s one-run section (also returned)."""
    claimed, accountant = None, None
    if state.ledger is not None and state.ledger.steps:
        claimed, accountant = tightest_claim(ledger_epsilons(state.ledger, config.delta, everything=True))
    delta_ = config.delta if config.client_dp else NON_PRIVATE_DELTA
    audit = canaries.audit(state.weights, delta_=delta_)
    record = one_run_record(
        audit,
        unit="client",
        claimed_epsilon=claimed,
        accountant=accountant,
        score=CANARY_SCORE,
    )
    update_audit_file(run_dir, "one_run", record)
    return record


def round_diagnostics(
    rnd: int, replies: list[Message], rejected: int, train_metrics: Any, strategy: Strategy
) -> dict[str, Any]:
    """One round's values computed on the clients' data without noise (diagnostics.json)."""
    diag: dict[str, Any] = {
        "round": rnd,
        "replies": sum(1 for r in replies if not r.has_error()),
        "failures": sum(1 for r in replies if r.has_error()),
        "rejected": rejected,
    }
    if train_metrics is not None:
        diag.update(
            {k: float(v) for k, v in train_metrics.items() if isinstance(v, int | float) and k != LOCAL_EPSILON}
        )
    eps = local_epsilons(replies)
    if eps:
        diag["local_epsilon_max"] = max(eps)
        diag["local_epsilon_min"] = min(eps)
    if isinstance(strategy, ClientLevelDP) and strategy.last_release is not None:
        diag["clipped"] = strategy.last_release.clipped
    codes: dict[str, int] = {}
    for reply in replies:
        if reply.has_error():
            codes[failure_code(reply)] = codes.get(failure_code(reply), 0) + 1
    if codes:
        diag["failure_codes"] = codes
    return diag


def ledger_epsilons(ledger: PrivacyLedger, delta: float, *, everything: bool) -> dict[str, float | str]:
    """Epsilon per accountant (the budget accountant only during the run); a failing accountant says why."""
    out: dict[str, float | str] = {}
    for name in ledger.accountants if everything else (BUDGET_ACCOUNTANT,):
        try:
            out[name] = ledger.epsilon(delta, name)
        except AccountingError as err:
            out[name] = f"n/a: {err}"
    return out


def privacy_record(config: FederatedConfig, state: ServerState, *, final: bool = True) -> dict[str, Any] | None:
    """The ``privacy`` section of run.json: what the ledger says (client-level DP) and local DP's worst client."""
    out: dict[str, Any] = {}
    if state.ledger is not None:
        ledger = state.ledger
        event = state.strategy.config.round_event() if isinstance(state.strategy, ClientLevelDP) else None
        out.update(
            {
                "unit": "client",
                "adjacency": ledger.adjacency,
                "epsilon": ledger_epsilons(ledger, config.delta, everything=final) if ledger.steps else {},
                "delta": config.delta,
                "noise_multiplier": config.dp_noise,
                "effective_noise_multiplier": event.noise_multiplier if event is not None else None,
                "sampling_rate": config.sampling_rate,
                "rounds": ledger.steps,
                "sampling": "tree" if config.dp_ftrl else config.client_sampling,
                "bound": sampling_description(config),
                "stopped_by_budget": state.stop_reason is not None,
            }
        )
        if config.secure_aggregation:
            out.update(secure_privacy_record(config, state))
    if config.local_dp_noise is not None:
        worst = [d["local_epsilon_max"] for d in state.diagnostics if "local_epsilon_max" in d]
        out["local_dp"] = {
            "unit": "example (on each client)",
            "noise_multiplier": config.local_dp_noise,
            "clip": config.local_dp_clip,
            "delta": config.delta,
            "epsilon_max_over_clients": max(worst) if worst else None,
            "note": "the largest epsilon any client reported (its own ledger, RDP); not a mean",
        }
    return out or None


def secure_privacy_record(config: FederatedConfig, state: ServerState) -> dict[str, Any]:
    """run.json's account of a SecAgg+ run: the mechanism that ran, who saw what, how dropouts count."""
    mechanism = mechanism_for(config, dim=sum(int(np.size(w)) for w in state.weights))
    # the full Proposition 14 curve of the rounds that released, each with the noise shares it actually had
    released = [r for r in state.history if not r.get("failed") and r.get("survivors")]
    epsilon_curve = None
    if released:
        total = sum(mechanism.rdp(ORDERS, shares=int(r["survivors"]) - 1) for r in released)
        epsilon_curve = rdp_epsilon(np.asarray(total), delta=config.delta, orders=ORDERS)
    return {
        "mechanism": "distributed discrete Gaussian (Kairouz, Liu & Steinke 2021) under SecAgg+",
        "effective_noise_multiplier": mechanism.effective_noise_multiplier() if mechanism.private else None,
        "bound": (
            f"fixed-size cohorts of {config.clients_per_round} under replace-one-client adjacency; each round's "
            f"Renyi DP from Proposition 14 with the noise of the other survivors only (at least "
            f"{mechanism.counted_shares} shares), recorded as the Gaussian whose RDP bounds it; no amplification "
            f"by sampling {config.clients_per_round} of {config.num_clients} clients is claimed"
        ),
        "epsilon_proposition_14": epsilon_curve,
        "secure_aggregation": {
            **mechanism.describe(),
            "who_sees_what": (
                "each client: its own update; the server: masked vectors (uniform-looking) and, after "
                "unmasking, only the sum of the survivors' clipped, rounded, noised updates modulo 2^bits"
            ),
            "dropouts": (
                f"each client's noise share is sized for {mechanism.min_survivors} survivors; a round with fewer "
                "is aborted before unmasking (nothing released, nothing charged); a round with more is charged "
                "with the noise actually present"
            ),
            "secagg_shares": config.secagg_shares,
            "secagg_threshold": config.secagg_threshold,
        },
    }


def outputs_record(config: FederatedConfig, seen_metrics: set[str] | None = None) -> dict[str, Any]:
    """Which outputs of the run directory epsilon covers (see docs/privacy.md)."""
    covered = [
        "weights.npz",
        "checkpoint/ (weights, server-optimizer moments, adaptive clip, ledger)",
        "privacy_ledger.json",
        "run.json rounds: server-side test loss/accuracy of the released model, epsilon, clip, clients sampled",
        "run.json test_metrics (server's held-out test set)",
    ]
    if config.audit_canaries:
        covered.append("audit.json (the final model's cosines with the canary clients' secret directions)")
    if not config.client_dp and config.local_dp_noise is None:
        covered = []
    scanned = list(dataset_for(config).info.read_from_data)
    not_covered = [] if config.dp_outputs_only else [f"{DIAGNOSTICS}: {DIAGNOSTIC_NOTE}"]
    not_covered += [f"dataset {name}: read from the data itself (no public metadata declared it)" for name in scanned]
    return {
        # Deployed clients say (metric NODE_LOCAL_DATA) that they trained on their own data-path file.
        "client_data": "node-local" if NODE_LOCAL_DATA in (seen_metrics or set()) else "partition",
        "dp_outputs_only": config.dp_outputs_only,
        "covered_by_epsilon": covered,
        "not_covered": not_covered,
        "model_shape_from": "public metadata" if not scanned else f"the data ({', '.join(scanned)})",
    }


def write_summary(run_dir: Path, config: FederatedConfig, state: ServerState, *, final: bool = True) -> None:
    """``run.json`` (config, versions, DP-covered rounds, privacy), ``diagnostics.json``, final weights."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if final:  # during the run the checkpoint holds the weights
        np.savez(run_dir / "weights.npz", *state.weights)
    write_json(
        run_dir / "run.json",
        {
            "kind": "federated",
            "backend": state.backend,
            "config": config.to_dict(),
            "rounds_run": state.round,
            "rounds": state.history,
            "final": state.history[-1] if state.history else None,
            "test_metrics": state.final_metrics,
            "privacy": privacy_record(config, state, final=final),
            "outputs": outputs_record(config, state.seen["metrics"]),
            "reply_audit": {
                "records": sorted(state.seen["records"]),
                "metrics": sorted(state.seen["metrics"]),
                "weight_shapes": [list(np.shape(w)) for w in state.weights],
            },
            "stop_reason": state.stop_reason,
            "status": "failed" if state.failed else ("completed" if final else "running"),
            "failed_rounds": state.failed_rounds,
            "audit": state.audit,
            "versions": versions(),
        },
    )
    if not config.dp_outputs_only:
        write_json(
            run_dir / DIAGNOSTICS,
            {
                "covered_by_privacy_ledger": False,
                "note": DIAGNOSTIC_NOTE,
                "rejected_replies": state.rejected_replies,
                "rounds": state.diagnostics,
            },
        )


def check_run_dir(run_dir: Path, config: FederatedConfig) -> None:
    """Refuse to resume a run directory written by a different configuration."""
    record = run_dir / "run.json"
    if not record.is_file():
        return
    saved = json.loads(record.read_text()).get("config", {})
    mine = json.loads(json.dumps(config.to_dict(), default=list))
    ignored = {"rounds", "run_dir", "fail_partitions", *QUORUM_SETTINGS}
    # a setting added after the run was written is absent from it: fine while it keeps its default
    defaults = json.loads(json.dumps(FederatedConfig().to_dict(), default=list))
    diff = sorted(k for k in mine if k not in ignored and saved.get(k, defaults.get(k)) != mine[k])
    if diff:
        raise ConfigError(
            f"run directory {run_dir} holds a run with other settings ({', '.join(diff)}); pass a new run-dir"
        )
