"""Strategies from the config, and the client-level DP wrapper composed with them."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedmodel.federated.config import STRATEGIES, FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.server import audit_replies
from fedmodel.federated.strategies import make_strategy, sampling

CURRENT = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


def record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((str(i), Array(np.asarray(a, np.float32))) for i, a in enumerate(arrays)))


def reply(arrays: list[np.ndarray], n: int = 10, **extra: RecordDict) -> Message:
    content = RecordDict({"arrays": record(arrays), "metrics": MetricRecord({"num-examples": n}), **extra})
    return Message(content, dst_node_id=0, message_type="train")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_builds_and_survives_a_checkpoint(name: str) -> None:
    strategy = make_strategy(FederatedConfig(strategy=name, num_clients=10, clients_per_round=4))  # type: ignore[arg-type]
    restored = pickle.loads(pickle.dumps(strategy))
    assert type(restored) is type(strategy)


def test_sampling_asks_flower_for_exactly_clients_per_round() -> None:
    for clients, per_round in [(10, 5), (100, 10), (100, 29), (1000, 10), (7, 7)]:
        s = sampling(FederatedConfig(num_clients=clients, clients_per_round=per_round))
        assert max(int(clients * s["fraction_train"]), s["min_train_nodes"]) == per_round


def test_dp_wrapper_without_noise_gives_the_clipped_sum_over_expected_clients() -> None:
    config = FederatedConfig(num_clients=10, clients_per_round=4, dp_noise=0.0, dp_clip=1.0)
    dp = make_strategy(config)
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
