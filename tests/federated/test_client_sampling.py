"""Client sampling for client-level DP: what the accountant assumes, from OS entropy, never from --seed."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.federated.client_sampling import QuorumError, SampledGrid, sample_clients, wait_for_nodes
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.strategies import make_strategy
from fedmodel.privacy.accounting import FixedSizeSampling, PoissonSampling


class Grid:
    def __init__(self, n: int) -> None:
        self.ids = list(range(100, 100 + n))

    def get_node_ids(self) -> list[int]:
        return list(self.ids)


def test_poisson_sampling_includes_each_client_independently_with_probability_q() -> None:
    # 2,000 rounds of 50 clients at q = 0.1: each client's inclusion rate is within 5 sigma of q, and the
    # per-round count varies (it is Binomial(50, 0.1), not fixed).
    rng = np.random.default_rng(1)
    ids = list(range(50))
    counts = np.zeros(50)
    sizes = []
    for _ in range(2000):
        chosen = sample_clients(ids, PoissonSampling(0.1), rng=rng)
        counts[chosen] += 1
        sizes.append(len(chosen))
    sigma = np.sqrt(0.1 * 0.9 / 2000)
    assert np.all(np.abs(counts / 2000 - 0.1) < 5 * sigma)
    assert np.var(sizes) == pytest.approx(50 * 0.1 * 0.9, rel=0.15)
    assert min(sizes) == 0  # empty rounds happen (P = 0.9^50 = 0.5%) and are still noisy releases


def test_fixed_size_sampling_takes_exactly_m_distinct_clients() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        chosen = sample_clients(list(range(10)), FixedSizeSampling(population=10, size=4), rng=rng)
        assert len(set(chosen)) == 4 and set(chosen) <= set(range(10))


def test_dp_runs_with_the_same_seed_sample_different_clients() -> None:
    # The wrapper's generator comes from OS entropy: two servers with the same --seed do not agree on who
    # takes part (an attacker who knows the seed does not learn the batch schedule).
    config = FederatedConfig(num_clients=40, clients_per_round=10, dp_noise=1.0, seed=0)
    picks = []
    for _ in range(2):
        strategy = make_strategy(config)
        assert isinstance(strategy, ClientLevelDP)
        rounds = [
            sorted(m.metadata.dst_node_id for m in strategy.configure_train(rnd, _arrays(), _config(), Grid(40)))  # type: ignore[arg-type]
            for rnd in range(1, 6)
        ]
        picks.append(rounds)
    assert picks[0] != picks[1]


def test_the_inner_strategy_sees_only_the_sampled_nodes() -> None:
    config = FederatedConfig(num_clients=20, clients_per_round=5, dp_noise=1.0)
    strategy = make_strategy(config, rng=np.random.default_rng(3))
    assert isinstance(strategy, ClientLevelDP)
    messages = list(strategy.configure_train(1, _arrays(), _config(), Grid(20)))  # type: ignore[arg-type]
    assert len(messages) == strategy.last_sampled
    assert {m.metadata.dst_node_id for m in messages} <= set(Grid(20).ids)
    view = SampledGrid(Grid(20), [101, 105])
    assert view.get_node_ids() == [101, 105] and view.ids == Grid(20).ids  # everything else is delegated


def test_wait_for_nodes_waits_until_enough_are_connected() -> None:
    grid = Grid(2)
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        grid.ids.append(len(grid.ids) + 100)

    assert len(wait_for_nodes(grid, 4, sleep=sleep)) == 4 and len(naps) == 2


def _arrays():  # type: ignore[no-untyped-def]
    from flwr.app import ArrayRecord

    return ArrayRecord([np.zeros(3, np.float32)])


def _config():  # type: ignore[no-untyped-def]
    from flwr.app import ConfigRecord

    return ConfigRecord()


def test_wait_for_nodes_gives_up_after_the_timeout_with_the_counts() -> None:
    grid = Grid(2)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(QuorumError, match=r"only 2 of the 3 clients .* within 5 s"):
        wait_for_nodes(grid, 3, timeout=5.0, sleep=sleep, clock=lambda: now[0])
    assert now[0] == 5.0  # it waited the whole timeout, not less
