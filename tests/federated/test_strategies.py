"""Strategies from the config, and the client-level DP wrapper composed with them."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedmodel.federated.config import STRATEGIES, FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.server import audit_replies, load_state, new_state, save_state
from fedmodel.federated.strategies import make_strategy, sampling

CURRENT = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


def record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((str(i), Array(np.asarray(a, np.float32))) for i, a in enumerate(arrays)))


def reply(arrays: list[np.ndarray], n: int = 10, **extra: RecordDict) -> Message:
    content = RecordDict({"arrays": record(arrays), "metrics": MetricRecord({"num-examples": n}), **extra})
    return Message(content, dst_node_id=0, message_type="train")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_builds_and_survives_a_checkpoint(name: str, tmp_path: Path) -> None:
    config = FederatedConfig(strategy=name, num_clients=10, clients_per_round=4)  # type: ignore[arg-type]
    state = new_state(config, [np.ones((2, 2), np.float32)])
    moments = {"0": np.full((2, 2), 0.25)}
    if hasattr(state.strategy, "m_t"):  # FedOpt: the server optimizer's moments must survive a restart
        state.strategy.m_t, state.strategy.v_t = moments, moments  # type: ignore[attr-defined]
    state.round = 3
    save_state(tmp_path, state)
    restored = load_state(tmp_path, config)
    assert restored is not None and restored.round == 3 and type(restored.strategy) is type(state.strategy)
    np.testing.assert_array_equal(restored.weights[0], np.ones((2, 2)))
    if hasattr(state.strategy, "m_t"):
        np.testing.assert_array_equal(restored.strategy.m_t["0"], moments["0"])  # type: ignore[attr-defined]


def test_dp_checkpoint_holds_no_generator_and_no_per_client_value(tmp_path: Path) -> None:
    config = FederatedConfig(num_clients=10, clients_per_round=4, dp_noise=1.0, dp_adaptive=True)
    state = new_state(config, list(CURRENT))
    dp = state.strategy
    assert isinstance(dp, ClientLevelDP)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(dp)
    dp.current = record(CURRENT)
    dp.aggregate_train(1, [reply([np.full((2, 2), 3.0), np.zeros(2)]), reply([np.full((2, 2), 0.1), np.zeros(2)])])
    assert state.ledger is not None and dp.last_release is not None
    state.ledger.record_release(dp.last_release.event, dp.last_release.sampling, epoch=1)
    state.round = 1
    save_state(tmp_path, state)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["arrays-round-00001.npz", "state.json"]
    document = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert document["dp"] == {"clip": dp.clip}  # the adaptive clip, and nothing per client
    assert "norms" not in json.dumps(document)
    restored = load_state(tmp_path, config)
    assert restored is not None and isinstance(restored.strategy, ClientLevelDP)
    assert restored.strategy.clip == dp.clip and restored.ledger is not None and restored.ledger.steps == 1
    assert restored.strategy._rng is not dp._rng  # a restarted server draws fresh randomness


def test_a_pickled_checkpoint_of_an_older_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pkl").write_bytes(b"old")
    with pytest.raises(ValueError, match="pickled checkpoint from an older fedmodel"):
        load_state(tmp_path, FederatedConfig())


def test_sampling_asks_flower_for_exactly_clients_per_round() -> None:
    for clients, per_round in [(10, 5), (100, 10), (100, 29), (1000, 10), (7, 7)]:
        s = sampling(FederatedConfig(num_clients=clients, clients_per_round=per_round))
        assert max(int(clients * s["fraction_train"]), s["min_train_nodes"]) == per_round
    # With client-level DP the wrapper samples; the inner strategy takes every node it is shown.
    s = sampling(FederatedConfig(num_clients=10, clients_per_round=5, dp_noise=1.0))
    assert (s["fraction_train"], s["min_train_nodes"], s["min_available_nodes"]) == (1.0, 0, 0)


def test_dp_wrapper_without_noise_gives_the_clipped_sum_over_expected_clients() -> None:
    config = FederatedConfig(num_clients=10, clients_per_round=4, dp_noise=0.0, dp_clip=1.0)
    dp = make_strategy(config, rng=np.random.default_rng(0))
    assert isinstance(dp, ClientLevelDP)
    dp.current = record(CURRENT)
    big = [np.full((2, 2), 3.0), np.full(2, 3.0)]  # norm sqrt(6 * 9) = 7.35 -> scaled to norm 1
    small = [np.full((2, 2), 0.1), np.zeros(2)]  # norm 0.2, kept
    empty = Message(RecordDict(), dst_node_id=0, message_type="train")  # carries no update: ignored
    malformed = reply([np.zeros((3, 3)), np.zeros(2)])
    kept, rejected = audit_replies([reply(big), reply(small), malformed], CURRENT)
    assert rejected == 1
    aggregated, metrics = dp.aggregate_train(1, [*kept, empty])
    assert aggregated is not None and metrics is not None
    expected = [(b / np.sqrt(54) + s) / 4 for b, s in zip(big, small, strict=True)]  # 4 expected, 2 replied
    for got, want in zip(aggregated.to_numpy_ndarrays(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert dp.last_release is not None and dp.last_release.replies == 2


def test_audit_rejects_replies_carrying_anything_but_weights_and_scalars() -> None:
    data_like = reply(CURRENT, extra=ArrayRecord(OrderedDict(x=Array(np.zeros((40, 8, 8, 1), np.float32)))))  # type: ignore[arg-type]
    with_config = Message(
        RecordDict(
            {
                "arrays": record(CURRENT),
                "metrics": MetricRecord({"num-examples": 1}),
                "labels": MetricRecord({"y": [1, 2]}),
            }
        ),
        dst_node_id=0,
        message_type="train",
    )
    non_finite = reply([np.full((2, 2), np.nan), np.zeros(2)])
    kept, rejected = audit_replies([data_like, with_config, non_finite, reply(CURRENT)], CURRENT)
    assert rejected == 3 and len(kept) == 1
