"""Client canaries: secret directions at the clip, aggregated like clients, scored on the final model."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedmodel.audit.canaries import ClientCanaries
from fedmodel.audit.federated import CanaryClients
from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.server import new_state

SHAPES = [(30, 20), (20,)]
# With d parameters, k included unit directions and no noise, an included canary's cosine is about
# (1 + N(0, k/d)) / sqrt(k) and an excluded one's N(0, k/d) / sqrt(k): d must be >> k for a perfect separation
# (620 parameters and 52 included canaries misranked 2 of 100 in CI, 3.5 sigma apart; 20100 puts them ~20 apart).
WIDE = [(200, 100), (100,)]


def _record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((str(i), Array(a)) for i, a in enumerate(arrays)))


def _reply(arrays: list[np.ndarray], **metrics: float) -> Message:
    content = RecordDict({"arrays": _record(arrays), "metrics": MetricRecord({"num-examples": 7, **metrics})})
    return Message(content, dst_node_id=0, message_type="train")


def test_directions_are_unit_deterministic_per_key_and_keys_are_secret() -> None:
    a = ClientCanaries(50)
    b = ClientCanaries(50)
    assert a.key != b.key and not np.array_equal(a.included, b.included)  # OS entropy, no seed
    d0 = a.direction(3, SHAPES)
    assert [x.shape for x in d0] == SHAPES
    assert np.sqrt(sum(float(np.sum(x**2)) for x in d0)) == pytest.approx(1.0)
    again = ClientCanaries(50, key=a.key, included=a.included)
    assert all(np.array_equal(x, y) for x, y in zip(d0, again.direction(3, SHAPES), strict=True))
    other = a.direction(4, SHAPES)
    assert abs(sum(float(np.sum(x * y)) for x, y in zip(d0, other, strict=True))) < 0.2  # near-orthogonal


def test_secret_round_trip(tmp_path: Path) -> None:
    c = ClientCanaries(20)
    c.save(tmp_path)
    back = ClientCanaries.load(tmp_path)
    assert back.key == c.key and np.array_equal(back.included, c.included)


def test_replies_carry_the_direction_at_the_clip_and_only_included_canaries_take_part(tmp_path: Path) -> None:
    initial = [np.zeros(s, np.float32) for s in SHAPES]
    clients = CanaryClients.for_run(tmp_path, 40, rate=1.0, initial=initial)
    current = [np.full(s, 0.5, np.float32) for s in SHAPES]
    real = [_reply([c + 0.1 for c in current], loss=2.0)]
    replies = clients.replies(current=_record(current), real=real, clip=0.7)
    assert len(replies) == int(clients.canaries.included.sum())  # rate 1: every included canary, no other
    metrics = replies[0].content.metric_records["metrics"]
    assert set(metrics) == {"num-examples", "loss"} and metrics["num-examples"] == 7  # shaped like real replies
    for reply in replies:
        sent = reply.content.array_records["arrays"].to_numpy_ndarrays()
        update = [a - c for a, c in zip(sent, current, strict=True)]
        assert np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update)) == pytest.approx(0.7, rel=1e-4)
    # participation at rate q: about q of the included canaries per round
    clients.rate = 0.25
    counts = [len(clients.replies(current=_record(current), real=real, clip=0.7)) for _ in range(200)]
    assert np.mean(counts) == pytest.approx(0.25 * clients.canaries.included.sum(), rel=0.15)
    # a resumed run finds the same secret and initial weights
    again = CanaryClients.for_run(tmp_path, 40, rate=1.0, initial=[np.ones(s) for s in SHAPES])
    assert again.canaries.key == clients.canaries.key and np.array_equal(again.initial[0], initial[0])


def test_canaries_through_client_level_dp_are_found_without_noise(tmp_path: Path) -> None:
    # z = 0 (no noise): the clipped sum is exact, so the included canaries' directions are in the model and
    # the audit separates them perfectly; with real noise the same scores drown (next test, and BENCHMARKS).
    config = FederatedConfig(num_clients=10, clients_per_round=10, dp_noise=0.0, dp_clip=1.0)
    initial = [np.zeros(s, np.float32) for s in WIDE]
    state = new_state(config, initial)
    assert isinstance(state.strategy, ClientLevelDP)
    clients = CanaryClients.for_run(tmp_path, 100, rate=1.0, initial=initial)
    weights = initial
    for rnd in range(1, 4):
        state.strategy.current = _record(weights)
        extra = clients.replies(current=_record(weights), real=[], clip=state.strategy.clip)
        aggregated, _ = state.strategy.aggregate_train(rnd, extra)
        assert aggregated is not None
        weights = aggregated.to_numpy_ndarrays()
    change = [w - i for w, i in zip(weights, initial, strict=True)]
    scores = clients.canaries.scores(change)
    included = clients.canaries.included
    assert scores[included].min() > scores[~included].max()  # every included canary ranks above every other
    # (the audit's guesses need not all be right: with 52 of 100 included, guessing 50 + 50 gets 2 wrong by design)
    assert clients.audit(weights, delta_=1e-5).epsilon_lower_bound > 2


def test_noise_hides_the_canaries(tmp_path: Path) -> None:
    config = FederatedConfig(num_clients=10, clients_per_round=10, dp_noise=5.0, dp_clip=1.0)
    initial = [np.zeros(s, np.float32) for s in SHAPES]
    state = new_state(config, initial)
    assert isinstance(state.strategy, ClientLevelDP)
    clients = CanaryClients.for_run(tmp_path, 100, rate=1.0, initial=initial)
    state.strategy.current = _record(initial)
    aggregated, _ = state.strategy.aggregate_train(1, clients.replies(current=_record(initial), real=[], clip=1.0))
    assert aggregated is not None
    assert clients.audit(aggregated.to_numpy_ndarrays(), delta_=1e-5).epsilon_lower_bound < 1.0


def test_config_refuses_canaries_with_fixed_size_dp_sampling() -> None:
    with pytest.raises(ConfigError, match="poisson"):
        FederatedConfig(dp_noise=1.0, client_sampling="fixed-size", audit_canaries=10)
    with pytest.raises(ConfigError, match="audit-canaries must be an integer >= 0"):
        FederatedConfig(audit_canaries=-2)


@pytest.mark.slow
def test_simulation_with_canaries_writes_the_audit(tmp_path: Path) -> None:
    from fedmodel.federated.simulate import run_simulation

    config = FederatedConfig.from_mapping(
        {
            "model": "mlp",
            "dataset": "digits",
            "num-clients": 10,
            "clients-per-round": 10,
            "rounds": 6,
            "local-epochs": 2,
            "fraction-evaluate": 0.0,
            "audit-canaries": 60,
            "run-dir": str(tmp_path / "run"),
        }
    )
    run_simulation(config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    audit = record["audit"]
    assert audit["unit"] == "client" and audit["canaries"] == 60
    assert audit["epsilon_lower_bound"] > 0.5  # non-private: the canaries' directions stay in the model
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["one_run"] == audit
    assert (tmp_path / "run" / "audit" / "client_canaries.json").exists()
    assert record["rounds"][-1]["sampled"] == 10  # canaries are not counted as sampled clients
    # the canaries scored again from the saved secret and weights.npz give the run's own result
    from fedmodel.audit.attack import membership_audit, rescore_canaries

    again = rescore_canaries(tmp_path / "run")
    assert again is not None and again["correct"] == audit["correct"] and again["guesses"] == audit["guesses"]
    assert again["epsilon_lower_bound"] == pytest.approx(audit["epsilon_lower_bound"], abs=1e-6)
    # membership inference on the federated run, with one shadow federation trained the same way

    mia = membership_audit(tmp_path / "run", targets=100, shadows=1)
    assert mia["targets_per_side"] == 100 and mia["lira"]["shadows"] == 1
    assert 0 <= mia["loss"]["auc"] <= 1 and 0 <= mia["lira"]["auc"] <= 1
    assert (tmp_path / "run" / "audit_roc.png").exists()
