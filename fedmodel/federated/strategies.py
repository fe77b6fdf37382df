"""Flower strategies from a :class:`FederatedConfig`, wrapped for client-level DP when asked."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from fedmodel.federated.client_dp import ClientDPConfig
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.dp_strategy import ClientLevelDP


def sampling(config: FederatedConfig) -> dict[str, Any]:
    """Flower's node sampling: exactly ``clients_per_round`` for training."""
    # Flower samples int(available * fraction); the half-client margin keeps float round-off from
    # turning 10 into 9.
    fraction = (config.clients_per_round + 0.5) / config.num_clients
    evaluate = max(1, round(config.num_clients * config.fraction_evaluate)) if config.fraction_evaluate else 0
    return {
        "fraction_train": min(1.0, fraction),
        "min_train_nodes": config.clients_per_round,
        "fraction_evaluate": min(1.0, (evaluate + 0.5) / config.num_clients) if evaluate else 0.0,
        "min_evaluate_nodes": evaluate,
        "min_available_nodes": config.num_clients,
    }


def make_strategy(config: FederatedConfig) -> Strategy:
    """The configured strategy; inside :class:`ClientLevelDP` when ``dp_noise`` is set."""
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
    else:
        strategy = Krum(num_malicious_nodes=config.krum_byzantine, **common)
    if not config.client_dp:
        return strategy
    assert config.dp_noise is not None
    dp = ClientDPConfig(
        noise_multiplier=config.dp_noise,
        clip=config.dp_clip,
        expected_clients=config.clients_per_round,
        adaptive=config.dp_adaptive,
        target_quantile=config.dp_target_quantile,
        clip_lr=config.dp_clip_lr,
    )
    return ClientLevelDP(strategy, dp, seed=config.seed)
