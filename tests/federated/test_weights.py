"""Update arithmetic: FedAvg's weighted mean equals np.average; clipping bounds the norm."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmodel.federated.weights import clip, global_norm, weighted_average


def _reply(arrays: list[np.ndarray], n: int) -> Message:
    record = ArrayRecord(OrderedDict((str(i), Array(a)) for i, a in enumerate(arrays)))
    content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": n})})
    return Message(content, dst_node_id=0, message_type="train")


def test_weighted_average_and_flowers_fedavg_equal_np_average() -> None:
    rng = np.random.default_rng(0)
    clients = [[rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)] for _ in range(5)]
    counts = [10, 1, 30, 7, 2]
    ours = weighted_average(clients, counts)
    strategy = FedAvg(min_available_nodes=1)
    flower, _ = strategy.aggregate_train(1, [_reply(c, n) for c, n in zip(clients, counts, strict=True)])
    assert flower is not None
    for k in range(2):
        want = np.average(np.stack([c[k] for c in clients]), axis=0, weights=counts)
        np.testing.assert_allclose(ours[k], want, rtol=1e-12)
        np.testing.assert_allclose(flower.to_numpy_ndarrays()[k], want, rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-4, 1e4), bound=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_clip_bounds_the_joint_norm_and_keeps_direction(scale: float, bound: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(5, 3)) * scale, rng.normal(size=7) * scale]
    clipped, norm = clip(arrays, bound)
    assert norm == global_norm(arrays)
    assert global_norm(clipped) <= bound * (1 + 1e-12)
    factor = clipped[0].ravel()[0] / arrays[0].ravel()[0]
    for c, a in zip(clipped, arrays, strict=True):
        np.testing.assert_allclose(c, a * factor, rtol=1e-9)
    if norm <= bound:
        assert factor == 1.0
