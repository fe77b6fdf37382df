"""A Flower strategy wrapper that makes any mean-based strategy client-level DP.

Composition, as Flower's own DP wrappers do: ``ClientLevelDP(FedAdam(...), config)``. The wrapper
replaces the mean of the replies with :func:`~fedmodel.federated.client_dp.noisy_clipped_mean` and hands
the inner strategy a single synthetic reply carrying ``w + noisy mean update``, so FedAvg takes it as is
and FedAdam/FedYogi/FedAdagrad apply their server optimizer to it. Each call to ``aggregate_train`` is one
noisy release; :attr:`last_release` describes it for the ledger.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedmodel.federated.client_dp import ClientDPConfig, RoundRelease, next_clip, noisy_clipped_mean
from fedmodel.federated.weights import delta, same_shapes


class ClientLevelDP(Strategy):
    """Clip each client's update, noise the sum once, divide by the expected clients per round."""

    def __init__(self, strategy: Strategy, config: ClientDPConfig, *, seed: int | None = None) -> None:
        self.strategy = strategy
        self.config = config
        self.clip = config.clip
        self.rng = np.random.default_rng(seed)
        self.current: ArrayRecord | None = None
        self.last_release: RoundRelease | None = None
        self.rejected = 0

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
        updates, contents = [], []
        for reply in replies:
            if reply.has_error() or "arrays" not in reply.content.array_records:
                continue
            arrays = reply.content.array_records["arrays"].to_numpy_ndarrays()
            if not same_shapes(arrays, current):
                self.rejected += 1  # a malformed update is dropped, never averaged
                continue
            updates.append(delta(arrays, current))
            contents.append(reply.content)
        release = noisy_clipped_mean(
            updates, config=self.config, clip_norm=self.clip, shapes=[a.shape for a in current], rng=self.rng
        )
        self.last_release = release
        self.clip = next_clip(self.clip, release.norms, config=self.config, rng=self.rng)
        proposed = [(c + u).astype(c.dtype) for c, u in zip(current, release.mean_update, strict=True)]
        synthetic = Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(OrderedDict((k, Array(v)) for k, v in zip(keys, proposed, strict=True))),
                    "metrics": MetricRecord({"num-examples": 1}),
                }
            ),
            dst_node_id=0,
            message_type="train",
        )
        aggregated, _ = self.strategy.aggregate_train(server_round, [synthetic])
        metrics = aggregate_metricrecords(contents, "num-examples") if contents else None
        return aggregated, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
