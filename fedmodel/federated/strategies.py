"""Flower strategies from a :class:`FederatedConfig`, wrapped for client-level DP when asked."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedmodel.federated.client_dp import client_dp_config
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.federated.norm_bound import NormBound


def sampling(config: FederatedConfig) -> dict[str, Any]:
    """Flower's node sampling: exactly ``clients_per_round`` for training.

    With client-level DP the wrapper samples the clients itself (secure randomness, Poisson or
    fixed-size): the inner strategy then takes every node it is shown.
    """
    # Flower samples int(available * fraction); the half-client margin keeps float round-off from
    # turning 10 into 9.
    fraction = (config.clients_per_round + 0.5) / config.num_clients
    evaluate = max(1, round(config.num_clients * config.fraction_evaluate)) if config.fraction_evaluate else 0
    # The server waits for its quorum itself (with a timeout) and shows the strategy the nodes connected
    # then; so that Flower never waits for more nodes than that (it would wait without limit), the minimums
    # are capped at the quorum.
    quorum = config.quorum
    train = (
        {"fraction_train": 1.0, "min_train_nodes": 0, "min_available_nodes": 0}
        if config.client_dp
        else {
            "fraction_train": min(1.0, fraction),
            "min_train_nodes": min(config.clients_per_round, quorum),
            "min_available_nodes": quorum,
        }
    )
    return {
        **train,
        "fraction_evaluate": min(1.0, (evaluate + 0.5) / config.num_clients) if evaluate else 0.0,
        "min_evaluate_nodes": min(evaluate, quorum),
    }


def make_strategy(config: FederatedConfig, *, rng: np.random.Generator | None = None) -> Strategy:
    """The configured strategy; inside :class:`ClientLevelDP` when ``dp_noise`` is set.

    ``rng`` replaces the DP wrapper's OS-entropy generator (tests only: it makes the noise predictable).
    """
    common = sampling(config)
    name = config.strategy
    strategy: Strategy
    if name == "fedavg":
        strategy = FedAvg(**common)
    elif name == "fedprox":
        strategy = FedProx(proximal_mu=config.proximal_mu, **common)
    elif name == "fedadam":
        strategy = FedAdam(eta=config.server_lr, eta_l=config.client_lr, **common)
    elif name == "fedyogi":
        strategy = FedYogi(eta=config.server_lr, eta_l=config.client_lr, **common)
    elif name == "fedadagrad":
        strategy = FedAdagrad(eta=config.server_lr, eta_l=config.client_lr, **common)
    elif name == "fedmedian":
        strategy = FedMedian(**common)
    elif name == "fedtrimmedavg":
        strategy = FedTrimmedAvg(beta=config.trim_beta, **common)
    elif name == "multikrum":
        strategy = MultiKrum(num_malicious_nodes=config.krum_byzantine, num_nodes_to_select=config.krum_keep, **common)
    else:
        strategy = Krum(num_malicious_nodes=config.krum_byzantine, **common)
    if not config.client_dp:
        return NormBound(strategy, config.norm_bound) if config.norm_bound is not None else strategy
    assert config.dp_noise is not None
    if config.dp_ftrl:
        from fedmodel.federated.ftrl import TreeDP  # imports TensorFlow and tensorflow-privacy

        return TreeDP(strategy, config, rng=rng)
    dp = client_dp_config(
        noise_multiplier=config.dp_noise,
        clip=config.dp_clip,
        num_clients=config.num_clients,
        clients_per_round=config.clients_per_round,
        sampling=config.client_sampling,
        adaptive=config.dp_adaptive,
        target_quantile=config.dp_target_quantile,
        clip_lr=config.dp_clip_lr,
    )
    return ClientLevelDP(strategy, dp, rng=rng)
