"""DP-FTRL: tree-aggregated noise, participation once per tree, restarts, and the ledger = dp-accounting."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.ftrl import TreeDP
from fedmodel.federated.server import budget_allows, new_state
from fedmodel.federated.strategies import make_strategy
from fedmodel.privacy.accounting import TreeAggregation

SHAPES = [(100, 100), (100,)]


class Grid:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


def _config(**overrides: Any) -> FederatedConfig:
    values: dict[str, Any] = {
        "num_clients": 9,
        "clients_per_round": 3,
        "dp_noise": 1.0,
        "dp_clip": 1.0,
        "dp_ftrl": True,
    }
    return FederatedConfig(**{**values, **overrides})


def _record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((str(i), Array(np.asarray(a, np.float32))) for i, a in enumerate(arrays)))


def _reply(arrays: list[np.ndarray], node: int) -> Message:
    content = RecordDict({"arrays": _record(arrays), "metrics": MetricRecord({"num-examples": 5})})
    return Message(content, dst_node_id=node, message_type="train")


def _strategy(config: FederatedConfig, seed: int | None = 0) -> TreeDP:
    strategy = make_strategy(config, rng=np.random.default_rng(seed) if seed is not None else None)
    assert isinstance(strategy, TreeDP)
    if seed is not None:
        strategy._tf_rng = tf.random.Generator.from_seed(seed)
    return strategy


def _round(strategy: TreeDP, rnd: int, grid: Grid, weights: list[np.ndarray], updates: Any) -> list[np.ndarray]:
    messages = list(strategy.configure_train(rnd, _record(weights), ConfigRecord({}), grid))  # type: ignore[arg-type]
    nodes = [int(m.metadata.dst_node_id) for m in messages]
    replies = [_reply([w + u for w, u in zip(weights, updates(n), strict=True)], n) for n in nodes]
    aggregated, _ = strategy.aggregate_train(rnd, replies)
    assert aggregated is not None
    return aggregated.to_numpy_ndarrays()


def test_tree_noise_has_the_stated_variance_at_every_prefix() -> None:
    # With zero updates the model after t rounds is w0 + (tree noise of prefix t) / m. The plain tree sums
    # popcount(t) nodes of std z*C for prefix t: variances 1, 1, 2, 1, 2, 2, 3 x (zC)^2 for t = 1..7.
    z, clip, m = 1.5, 0.4, 3
    config = _config(dp_noise=z, dp_clip=clip, clients_per_round=m, ftrl_restart_rounds=8, num_clients=30)
    strategy = _strategy(config)
    grid = Grid(list(range(30)))
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    for t in range(1, 8):
        weights = _round(strategy, t, grid, weights, lambda n: [np.zeros(s) for s in SHAPES])
        prefix = np.concatenate([w.ravel() for w in weights]) * m
        expected = bin(t).count("1") * (z * clip) ** 2
        assert np.var(prefix) == pytest.approx(expected, rel=0.05), t
        assert abs(np.mean(prefix)) < 5 * np.sqrt(expected / prefix.size)


def test_updates_are_clipped_before_the_tree() -> None:
    config = _config(dp_noise=0.0, dp_clip=0.5)
    strategy = _strategy(config)
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    big = [np.full(s, 3.0) for s in SHAPES]
    out = _round(strategy, 1, Grid(list(range(9))), weights, lambda n: big)
    total = np.linalg.norm(np.concatenate([w.ravel() for w in out])) * 3  # the sum of 3 clipped updates
    assert total == pytest.approx(3 * 0.5, rel=1e-4)
    assert strategy.last_release is not None and strategy.last_release.clipped == 3


def test_each_client_takes_part_at_most_once_per_tree_and_trees_restart() -> None:
    config = _config(num_clients=9, clients_per_round=3, ftrl_restart_rounds=3, dp_noise=0.0)
    strategy = _strategy(config)
    grid = Grid(list(range(9)))
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    seen: dict[int, list[int]] = {}
    for rnd in range(1, 10):
        messages = list(strategy.configure_train(rnd, _record(weights), ConfigRecord({}), grid))  # type: ignore[arg-type]
        seen.setdefault(strategy.tree, []).extend(int(m.metadata.dst_node_id) for m in messages)
        strategy.aggregate_train(rnd, [])
    assert sorted(seen) == [0, 1, 2]  # a new tree every 3 rounds
    for nodes in seen.values():
        assert sorted(nodes) == list(range(9))  # everyone once per tree, nobody twice
    # fewer fresh clients than the tree still wants: restart early instead of reusing anyone
    early = _strategy(_config(num_clients=9, clients_per_round=3, ftrl_restart_rounds=10, dp_noise=0.0))
    small = Grid([0, 1, 2, 3])
    trees = []
    for rnd in range(1, 4):
        list(early.configure_train(rnd, _record(weights), ConfigRecord({}), small))  # type: ignore[arg-type]
        trees.append(early.tree)
        early.aggregate_train(rnd, [])
    assert trees == [0, 0, 1] and early.last_sampled == 3


def test_the_ledger_equals_dp_accounting_over_restarted_trees(tmp_path: Path) -> None:
    config = _config(num_clients=10, clients_per_round=3, ftrl_restart_rounds=3, dp_noise=1.2, delta=1e-5)
    state = new_state(config, [np.zeros(s, np.float32) for s in SHAPES])
    strategy = state.strategy
    assert isinstance(strategy, TreeDP) and state.ledger is not None and state.ledger.sampling == "tree"
    grid = Grid(list(range(10)))
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    for rnd in range(1, 8):  # trees of 3, 3 and 1 rounds
        weights = _round(strategy, rnd, grid, weights, lambda n: [np.zeros(s) for s in SHAPES])
        release = strategy.last_release
        assert release is not None
        state.ledger.record_release(release.event, release.sampling, epoch=rnd)
    assert [e.sampling for e in state.ledger.entries][::3] == [
        TreeAggregation(0),
        TreeAggregation(1),
        TreeAggregation(2),
    ]
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    for steps in (3, 3, 1):
        accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(1.2, steps))
    assert state.ledger.epsilon(1e-5, "rdp") == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert state.ledger.accountants == ("rdp",)
    assert "each client at most once per tree" in str(state.ledger.adjacency)
    # and a tree is cheaper than the same rounds charged one by one (the point of the tree)
    separate = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    separate.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(1.2, 1), 7)
    assert accountant.get_epsilon(1e-5) < separate.get_epsilon(1e-5)


def test_budget_is_enforced_fail_closed_across_trees() -> None:
    config = _config(num_clients=10, clients_per_round=3, ftrl_restart_rounds=4, dp_noise=1.0, target_epsilon=15.0)
    state = new_state(config, [np.zeros(s, np.float32) for s in SHAPES])
    strategy = state.strategy
    assert isinstance(strategy, TreeDP) and state.ledger is not None
    grid = Grid(list(range(10)))
    rounds = 0
    while budget_allows(config, state):
        rounds += 1
        list(strategy.configure_train(rounds, _record([np.zeros(s) for s in SHAPES]), ConfigRecord({}), grid))  # type: ignore[arg-type]
        strategy.aggregate_train(rounds, [])
        assert strategy.last_release is not None
        state.ledger.record_release(strategy.last_release.event, strategy.last_release.sampling, epoch=rounds)
        state.round = rounds
    assert rounds >= 2
    assert state.ledger.epsilon(config.delta) <= 15.0
    # the check assumes the costliest next round: a new tree (the next round may restart early)
    assert strategy.next_sampling() == TreeAggregation(strategy.tree + 1)
    trial = type(state.ledger).from_dict(state.ledger.to_dict())
    trial.record_release(dp_accounting.GaussianDpEvent(1.0), strategy.next_sampling(), epoch=rounds + 1)
    assert trial.epsilon(config.delta) > 15.0


def test_noise_is_fresh_per_run_and_a_resumed_server_starts_a_new_tree() -> None:
    config = _config(dp_noise=1.0)
    grid = Grid(list(range(9)))
    zeros = [np.zeros(s, np.float32) for s in SHAPES]
    a = _round(_strategy(config, seed=None), 1, grid, zeros, lambda n: [np.zeros(s) for s in SHAPES])
    b = _round(_strategy(config, seed=None), 1, grid, zeros, lambda n: [np.zeros(s) for s in SHAPES])
    assert not np.allclose(a[0], b[0])  # OS entropy, not --seed
    strategy = _strategy(config)
    _round(strategy, 1, grid, zeros, lambda n: [np.zeros(s) for s in SHAPES])
    saved = strategy.state()
    assert set(saved) == {"clip", "tree"}  # no noise, no node, no generator state
    resumed = _strategy(config)
    resumed.restore(saved)
    assert resumed.tree == 1 and resumed.used == set() and resumed.steps_in_tree == 0


def test_config_refuses_what_dp_ftrl_cannot_do() -> None:
    with pytest.raises(ConfigError, match="needs dp-noise"):
        _config(dp_noise=None)
    with pytest.raises(ConfigError, match="samples no clients"):
        _config(client_sampling="fixed-size")
    with pytest.raises(ConfigError, match="ftrl-restart-rounds must be an integer >= 1"):
        _config(ftrl_restart_rounds=0)
    assert _config(num_clients=10, clients_per_round=3).ftrl_rounds_per_tree == 3


@pytest.mark.slow
def test_simulation_with_dp_ftrl(tmp_path: Path) -> None:
    import json

    from fedmodel.federated.simulate import run_simulation

    run_dir = tmp_path / "run"
    config = FederatedConfig.from_mapping(
        {
            "model": "mlp",
            "dataset": "digits",
            "num-clients": 6,
            "clients-per-round": 3,
            "rounds": 5,
            "local-epochs": 2,
            "dp-noise": 0.05,
            "dp-ftrl": True,
            "fraction-evaluate": 0.0,
            "run-dir": str(run_dir),
        }
    )
    run_simulation(config)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["privacy"]["sampling"] == "tree" and "DP-FTRL" in record["privacy"]["bound"]
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    assert [e["sampling"]["tree"] for e in ledger["entries"]] == [0, 0, 1, 1, 2]  # 6 // 3 = 2 rounds per tree
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    for steps in (2, 2, 1):
        accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(0.05, steps))
    assert record["privacy"]["epsilon"]["rdp"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert record["test_metrics"]["accuracy"] > 0.3
    report = (run_dir / "privacy_report.md").read_text()
    assert "tree aggregation (DP-FTRL)" in report and "Poisson" not in report
