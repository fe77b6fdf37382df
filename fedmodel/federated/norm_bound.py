"""Norm bounding without noise: every client's update is clipped to an L2 norm before aggregation.

``NormBound(FedAvg(...), bound)`` (composition, as :class:`~fedmodel.federated.dp_strategy.ClientLevelDP`)
clips each reply's update ``delta_i = w_i - w`` to norm ``bound`` and hands the inner strategy the
clipped replies, so a boosted ("model replacement") update moves the model no further than an honest
one of that norm (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"). With client-level DP
the DP wrapper clips already (``dp-clip``), so this wrapper is for runs without DP. It adds no noise and
makes no privacy claim.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmodel.federated.weights import clip, delta, same_shapes
from fedmodel.federated.wrapper import EvaluatePassThrough, array_record


class NormBound(EvaluatePassThrough):
    """Clip each client's update to ``bound`` (L2), then aggregate with ``strategy``."""

    def __init__(self, strategy: Strategy, bound: float) -> None:
        if not bound > 0:
            raise ValueError(f"norm bound must be > 0, got {bound!r}")
        self.strategy = strategy
        self.bound = float(bound)
        self.current: ArrayRecord | None = None
        self.clipped = 0  # replies whose update was longer than the bound, last round

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.current is None:
            raise RuntimeError("configure_train must run before aggregate_train")
        keys = list(self.current.keys())
        current = self.current.to_numpy_ndarrays()
        bounded, self.clipped = [], 0
        for reply in replies:
            if reply.has_error() or "arrays" not in reply.content.array_records:
                bounded.append(reply)
                continue
            arrays = reply.content.array_records["arrays"].to_numpy_ndarrays()
            if not same_shapes(arrays, current):
                bounded.append(reply)  # the server's reply audit rejects these before they get here
                continue
            update, norm = clip(delta(arrays, current), self.bound)
            self.clipped += norm > self.bound
            clipped = [(c + u).astype(c.dtype) for c, u in zip(current, update, strict=True)]
            content = RecordDict(
                {
                    "arrays": array_record(keys, clipped),
                    **{name: record for name, record in reply.content.metric_records.items()},
                }
            )
            bounded.append(Message(content, dst_node_id=0, message_type="train"))
        return self.strategy.aggregate_train(server_round, bounded)
