"""A Flower strategy wrapper that makes any mean-based strategy client-level DP.

Composition, as Flower's own DP wrappers do: ``ClientLevelDP(FedAdam(...), config)``. The wrapper

1. samples the round's clients itself, as the accountant assumes (:mod:`.client_sampling`), from an
   OS-entropy generator, and shows the inner strategy only those nodes;
2. replaces the mean of the replies with :func:`~fedmodel.federated.client_dp.release_round` (clip, sum,
   noise once, divide by the expected clients per round), and hands the inner strategy a single synthetic
   reply carrying ``w + noisy mean update``, so FedAvg takes it as is and FedAdam/FedYogi/FedAdagrad apply
   their server optimizer to it.

Each call to ``aggregate_train`` is one noisy release; :attr:`last_release` holds its event and sampling
for the ledger, and no per-client value. The generator is never saved: a restarted server draws fresh
randomness (:meth:`state` / :meth:`restore` carry only the adaptive clip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedmodel.federated.client_dp import ClientDPConfig, RoundRelease, release_round
from fedmodel.federated.client_sampling import SampledGrid, sample_clients
from fedmodel.federated.weights import delta, same_shapes
from fedmodel.federated.wrapper import EvaluatePassThrough, array_record
from fedmodel.privacy import randomness


class ClientLevelDP(EvaluatePassThrough):
    """Sample clients as the accountant assumes; clip each update, noise the sum once, divide by ``m``."""

    def __init__(
        self,
        strategy: Strategy,
        config: ClientDPConfig,
        *,
        rng: np.random.Generator | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.config = config
        self.clip = config.mechanism.clip
        self._rng = rng if rng is not None else randomness.numpy_rng()
        self._log = log
        self.current: ArrayRecord | None = None
        self.last_release: RoundRelease | None = None
        self.last_sampled = 0
        self.rejected = 0

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("ClientLevelDP holds a secret noise generator and is never pickled; use state()")

    def state(self) -> dict[str, float]:
        """What a restarted server needs (JSON-ready): the current clip."""
        return {"clip": float(self.clip)}

    def restore(self, state: dict[str, Any]) -> None:
        clip = state.get("clip")
        if not isinstance(clip, int | float) or not clip > 0:
            raise ValueError(f"checkpointed clip must be a number > 0, got {clip!r}")
        self.clip = float(clip)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        # The server has waited for its quorum; a client not connected now is not sampled (its probability
        # of taking part is 0 <= q, so the accountant's bound still holds for it).
        chosen = self.sample_nodes(grid)
        if not chosen:
            return []
        view: Any = SampledGrid(grid, chosen)
        return self.strategy.configure_train(server_round, arrays, config, view)

    def next_sampling(self) -> Any:
        """How the next release's clients are drawn, as the ledger records it."""
        return self.config.sampling

    def charge_sampling(self) -> Any:
        """What a failed round (no release, charged all the same) is recorded as."""
        return self.config.sampling

    def sample_nodes(self, grid: Grid) -> list[int]:
        """This round's clients among the connected nodes, as the accountant assumes (OS entropy)."""
        available = [int(n) for n in grid.get_node_ids()]
        chosen = sample_clients(available, self.config.sampling, rng=self._rng)
        self.last_sampled = len(chosen)
        return chosen

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        current, updates, contents = self.updates_of(replies)
        release = release_round(
            updates, config=self.config, clip=self.clip, shapes=[a.shape for a in current], rng=self._rng
        )
        self.last_release = release
        self.clip = release.next_clip
        aggregated = self.apply_mean(server_round, release.mean_update)
        metrics = aggregate_metricrecords(contents, "num-examples") if contents else None
        return aggregated, metrics

    def updates_of(self, replies: Iterable[Message]) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[Any]]:
        """The current weights, each usable reply's update and its content (malformed replies counted, dropped)."""
        if self.current is None:
            raise RuntimeError("configure_train must run before aggregate_train")
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
        return current, updates, contents

    def apply_mean(self, server_round: int, mean_update: list[np.ndarray]) -> ArrayRecord | None:
        """Hand the inner strategy ``w + mean_update`` as its one reply (FedAvg keeps it; FedOpt steps to it)."""
        if self.current is None:
            raise RuntimeError("configure_train must run before a release is applied")
        keys = list(self.current.keys())
        current = self.current.to_numpy_ndarrays()
        proposed = [(c + u).astype(c.dtype) for c, u in zip(current, mean_update, strict=True)]
        synthetic = Message(
            RecordDict({"arrays": array_record(keys, proposed), "metrics": MetricRecord({"num-examples": 1})}),
            dst_node_id=0,
            message_type="train",
        )
        aggregated, _ = self.strategy.aggregate_train(server_round, [synthetic])
        return aggregated
