"""Server loop pieces: the budget check before a round, and the ledger of a DP run."""

from __future__ import annotations

import dp_accounting
import dp_accounting.rdp
import numpy as np
import pytest
from dp_accounting import GaussianDpEvent
from dp_accounting.privacy_accountant import NeighboringRelation

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.server import budget_allows, new_state, privacy_record
from fedmodel.privacy.accounting import PoissonSampling, dp_event, epsilon


def test_budget_check_stops_before_the_round_that_would_exceed_the_target() -> None:
    config = FederatedConfig(num_clients=20, clients_per_round=10, dp_noise=1.0, target_epsilon=3.0, delta=1e-3)
    state = new_state(config, [np.zeros(3)])
    assert state.ledger is not None and state.ledger.unit == "client" and state.ledger.sampling == "poisson"
    rounds = 0
    while budget_allows(config, state):
        state.ledger.record_release(GaussianDpEvent(1.0), PoissonSampling(0.5), epoch=rounds + 1)
        rounds += 1
        assert rounds < 1000

    def eps(steps: int) -> float:
        return epsilon(dp_event(noise_multiplier=1.0, sampling_rate=0.5, steps=steps), delta=1e-3, accountant="rdp")

    spent, one_more = eps(rounds), eps(rounds + 1)
    assert rounds >= 1 and spent <= 3.0 < one_more


def test_runs_without_client_dp_have_no_ledger_and_no_budget() -> None:
    state = new_state(FederatedConfig(num_clients=4, clients_per_round=2), [np.zeros(3)])
    assert state.ledger is None
    assert budget_allows(FederatedConfig(num_clients=4, clients_per_round=2), state)


def _one_release(config: FederatedConfig) -> list[np.ndarray]:
    from collections import OrderedDict

    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    state = new_state(config, [np.zeros(1000, np.float32)])
    assert isinstance(state.strategy, ClientLevelDP)
    state.strategy.current = ArrayRecord([np.zeros(1000, np.float32)])
    update = ArrayRecord(OrderedDict({"0": Array(np.full(1000, 0.01, np.float32))}))
    reply = Message(RecordDict({"arrays": update, "metrics": MetricRecord({"num-examples": 5})}), dst_node_id=0,
                    message_type="train")  # fmt: skip
    aggregated, _ = state.strategy.aggregate_train(1, [reply])
    assert aggregated is not None
    return aggregated.to_numpy_ndarrays()


def test_two_servers_with_the_same_seed_add_different_noise() -> None:
    # The seed is in run.json: if it fixed the noise, an attacker could replay and subtract it.
    config = FederatedConfig(num_clients=10, clients_per_round=5, dp_noise=1.0, seed=7)
    first, second = _one_release(config), _one_release(config)
    assert not np.allclose(first[0], second[0])
    # The difference of two independent releases has std sqrt(2) z C / m (with C = 1, m = 5).
    assert np.std(first[0] - second[0]) == pytest.approx(np.sqrt(2) * 1.0 / 5, rel=0.1)


def test_fixed_size_rounds_are_accounted_with_the_without_replacement_bound() -> None:
    config = FederatedConfig(num_clients=20, clients_per_round=5, dp_noise=1.0, client_sampling="fixed-size",
                             target_epsilon=50.0, delta=1e-5)  # fmt: skip
    state = new_state(config, [np.zeros(3)])
    assert state.ledger is not None and isinstance(state.strategy, ClientLevelDP)
    for rnd in range(1, 4):
        state.ledger.record_release(state.strategy.config.round_event(), state.strategy.config.sampling, epoch=rnd)
    assert state.ledger.accountants == ("rdp",) and "replace-one" in str(state.ledger.adjacency)
    reference = dp_accounting.rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    reference.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(20, 5, GaussianDpEvent(0.5)), 3
        )
    )  # replace-one: the clipped sum moves by up to 2C, so the Gaussian's multiplier is z / 2
    assert state.ledger.epsilon(1e-5, "rdp") == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert "without replacement" in str(privacy_record(config, state))


def test_the_report_renders_an_accountant_that_could_not_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from fedmodel.federated.report import write_report

    record = {
        "config": {"model": "mlp"},
        "rounds": [{"round": 1, "loss": 1.0, "accuracy": 0.5, "epsilon": 2.0, "sampled": 3}],
        "privacy": {"epsilon": {"rdp": 2.0, "pld": "n/a: too small a noise"}, "delta": 1e-3, "rounds": 1},
        "rounds_run": 1,
    }
    (tmp_path / "run.json").write_text(json.dumps(record))
    write_report(tmp_path)
    assert "n/a: too small a noise (pld)" in (tmp_path / "report.md").read_text()


def _reply(arrays: list[np.ndarray], *, metrics: dict[str, float] | None = None, extra: bool = False):  # type: ignore[no-untyped-def]
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics or {"num-examples": 3})})
    if extra:
        content["smuggled"] = ConfigRecord({"x": "labels"})
    return Message(content, dst_node_id=0, message_type="train")


def test_malformed_replies_are_rejected_with_a_reason_and_good_ones_kept() -> None:
    from fedmodel.federated.server import audit_replies

    reference = [np.zeros((4, 2), np.float32), np.zeros(2, np.float32)]
    good = _reply([np.ones((4, 2), np.float32), np.ones(2, np.float32)])
    replies = [
        good,
        _reply([np.ones((2, 4), np.float32), np.ones(2, np.float32)]),  # wrong shape
        _reply([np.ones((4, 2), np.int32), np.ones(2, np.int32)]),  # not floats
        _reply([np.full((4, 2), np.nan, np.float32), np.ones(2, np.float32)]),  # NaN
        _reply([np.ones((4, 2), np.float32), np.ones(2, np.float32)], extra=True),  # an extra record
    ]
    reasons: list[str] = []
    kept, rejected = audit_replies(replies, reference, reasons=reasons)
    assert kept == [good] and rejected == 4 and len(reasons) == 4
    assert "do not match" in reasons[0] and "do not match" in reasons[1]
    assert "NaN or Inf" in reasons[2] and "unexpected records config:smuggled" in reasons[3]


def test_quorum_caps_flowers_minimums_so_it_never_waits_for_more_nodes_than_were_connected() -> None:
    from fedmodel.federated.strategies import sampling

    config = FederatedConfig(num_clients=10, clients_per_round=5, min_available_clients=3, fraction_evaluate=0.8)
    got = sampling(config)
    assert got["min_available_nodes"] == 3 and got["min_train_nodes"] == 3 and got["min_evaluate_nodes"] == 3
    assert sampling(FederatedConfig(num_clients=10, clients_per_round=5))["min_train_nodes"] == 5


def test_the_round_line_shows_rejected_and_dropped_clients_when_there_are_some() -> None:
    from fedmodel.federated.server import _fmt

    row = {"round": 3, "loss": 0.5, "accuracy": 0.9, "sampled": 3}
    busy = _fmt(row, {"replies": 1, "failures": 0, "rejected": 1, "dropped": [7], "seconds": 1.0})
    assert "replies 1  failures 0  rejected 1  dropped [7]" in busy  # a NaN reply is not silently "failures 0"
    quiet = _fmt(row, {"replies": 3, "failures": 0, "rejected": 0, "dropped": [], "seconds": 1.0})
    assert "rejected" not in quiet and "dropped" not in quiet and "failures 0" in quiet
