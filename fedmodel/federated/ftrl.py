"""DP-FTRL (Kairouz et al. 2021): client-level DP by tree aggregation, with no sampling assumption.

Clients take part when they are available; the only rule is that each client contributes **at most once per
tree**. Each round the server clips every reply's update to ``dp-clip`` and releases the sum through
tensorflow-privacy's ``TreeResidualSumQuery``: the noisy prefix sum of all rounds so far in the tree (a
binary tree over rounds, one Gaussian node of std ``z * C`` per dyadic interval) minus the previous one, so
that the model, ``w_0 + (prefix sum + tree noise) / m``, is FTRL's. Post-processing of the released prefix
sums (FedAvg, or a server optimizer) keeps the guarantee.

A tree restarts every ``ftrl-restart-rounds`` rounds (default: ``num-clients // clients-per-round``, one pass
over the population) or when no available client is left that has not taken part in it; a restarted tree
begins with fresh noise and lets every client take part again (the paper's "restarts per epoch"). The ledger
records each round as ``TreeAggregation(tree)``; a tree of ``n`` rounds costs
``SingleEpochTreeAggregationDpEvent(z, n)`` (RDP ``alpha ceil(log2(n + 1)) / (2 z^2)``), and trees compose.

The tree's node noise is drawn from a ``tf.random.Generator`` keyed with OS entropy
(:func:`fedmodel.privacy.randomness.tf_generator`) through :class:`SecureNoise`, not tensorflow-privacy's
``GaussianNoiseGenerator``, which seeds itself from the time of day when no seed is given. The noise lives
only in memory: a restarted server starts a new tree (a checkpoint never holds a node).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dp_accounting
import numpy as np
import tensorflow as tf
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from tensorflow_privacy.privacy.dp_query import tree_aggregation
from tensorflow_privacy.privacy.dp_query.tree_aggregation_query import TreeResidualSumQuery

from fedmodel.federated.client_dp import RoundRelease, client_dp_config
from fedmodel.federated.client_sampling import SampledGrid
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.weights import global_norm
from fedmodel.privacy import randomness
from fedmodel.privacy.accounting import TreeAggregation
from fedmodel.privacy.randomness import NOISE_DRAWS


class SecureNoise(tree_aggregation.ValueGenerator):
    """Gaussian tree nodes of std ``stddev`` from an OS-entropy generator (``rng``: tests only)."""

    def __init__(self, stddev: float, specs: list[tf.TensorSpec], rng: Any = None) -> None:
        self.stddev = float(stddev)
        self.specs = specs
        self.rng = rng if rng is not None else randomness.tf_generator()

    def initialize(self) -> tf.Tensor:
        return tf.constant(0)  # the generator keeps its own state, in memory only

    def next(self, state: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        # the sum of NOISE_DRAWS normals scaled back to std 1 (floating-point attack mitigation, docs/privacy.md)
        scale = self.stddev / np.sqrt(NOISE_DRAWS)
        nodes = [
            tf.add_n([self.rng.normal(spec.shape, dtype=tf.float32) for _ in range(NOISE_DRAWS)]) * scale
            for spec in self.specs
        ]
        return nodes, state


class TreeDP(ClientLevelDP):
    """DP-FTRL around a mean-based strategy: participation once per tree, tree-aggregated noise (see module)."""

    def __init__(
        self, strategy: Strategy, config: FederatedConfig, *, rng: np.random.Generator | None = None, tf_rng: Any = None
    ) -> None:
        assert config.dp_noise is not None
        dp = client_dp_config(
            noise_multiplier=config.dp_noise,
            clip=config.dp_clip,
            num_clients=config.num_clients,
            clients_per_round=config.clients_per_round,
            sampling="poisson",  # not used: DP-FTRL samples nothing
        )
        super().__init__(strategy, dp, rng=rng)
        self.cohort = config.clients_per_round
        self.restart_rounds = config.ftrl_rounds_per_tree
        self.tree = 0
        self.steps_in_tree = 0
        self.used: set[int] = set()
        self._tf_rng = tf_rng
        self._query: TreeResidualSumQuery | None = None
        self._query_state: Any = None

    # -- state: only the tree count; the noise is never saved, so a restarted server starts a new tree --

    def state(self) -> dict[str, float]:
        return {"clip": float(self.clip), "tree": float(self.tree)}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._new_tree(int(state.get("tree", -1)) + 1)

    def _new_tree(self, tree: int) -> None:
        self.tree, self.steps_in_tree, self.used = tree, 0, set()
        self._query, self._query_state = None, None

    def next_sampling(self) -> TreeAggregation:
        """The costliest tree the next release may belong to (for the budget check).

        The next round may start a new tree (on schedule, or early when every available client has taken
        part, which depends on who is connected then). A new tree's first step costs a full node
        (``alpha / (2 z^2)``); one more step in the current tree costs that or nothing. So the budget check
        assumes a new tree unless the current one is still empty: it may stop a round early, never late.
        """
        return TreeAggregation(self.tree + 1 if self.steps_in_tree > 0 else self.tree)

    def charge_sampling(self) -> TreeAggregation:
        return TreeAggregation(self.tree)

    # -- rounds ---------------------------------------------------------------------------------------

    def sample_nodes(self, grid: Grid) -> list[int]:
        """Up to ``clients-per-round`` available clients that have not yet taken part in this tree."""
        if self.steps_in_tree >= self.restart_rounds:
            self._new_tree(self.tree + 1)
        available = sorted(int(n) for n in grid.get_node_ids())
        fresh = [n for n in available if n not in self.used]
        if not fresh and self.steps_in_tree > 0:  # everyone has taken part: restart early
            self._new_tree(self.tree + 1)
            fresh = available
        take = min(self.cohort, len(fresh))
        chosen = sorted(int(fresh[i]) for i in self._rng.choice(len(fresh), size=take, replace=False))
        self.used.update(chosen)
        self.last_sampled = len(chosen)
        return chosen

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        chosen = self.sample_nodes(grid)
        if not chosen:
            return []
        view: Any = SampledGrid(grid, chosen)
        return self.strategy.configure_train(server_round, arrays, config, view)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        current, updates, contents = self.updates_of(replies)
        total = self.release(updates, [a.shape for a in current])
        self.last_release = RoundRelease(
            mean_update=[t / self.cohort for t in total],
            clip=self.clip,
            next_clip=self.clip,
            event=dp_accounting.GaussianDpEvent(self.config.mechanism.noise_multiplier),
            sampling=TreeAggregation(self.tree),  # type: ignore[arg-type]
            replies=len(updates),
            clipped=sum(1 for u in updates if global_norm(u) > self.clip),
        )
        aggregated = self.apply_mean(server_round, self.last_release.mean_update)
        metrics = aggregate_metricrecords(contents, "num-examples") if contents else None
        return aggregated, metrics

    def release(self, updates: list[list[np.ndarray]], shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """This round's residual: clipped sum + (tree noise of this prefix - that of the previous one)."""
        if self._query is None:
            specs = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
            noise = SecureNoise(self.config.mechanism.noise_multiplier * self.clip, specs, rng=self._tf_rng)

            def clip(record: list[tf.Tensor], value: Any) -> list[tf.Tensor]:
                return tf.clip_by_global_norm(record, value)[0]

            self._query = TreeResidualSumQuery(specs, noise, clip, self.clip, use_efficient=False)
            self._query_state = self._query.initial_global_state()
        query = self._query
        params = query.derive_sample_params(self._query_state)
        sample = query.initial_sample_state([tf.zeros(s, tf.float32) for s in shapes])
        for update in updates:
            record = [tf.constant(u, tf.float32) for u in update]
            sample = query.accumulate_record(params, sample, record)
        noised, self._query_state, _ = query.get_noised_result(sample, self._query_state)
        self.steps_in_tree += 1
        return [np.asarray(n, np.float64) for n in noised]
