"""The cached local trainer: learns, is reproducible, resets per round, honours FedProx, runs local DP.

Local DP-SGD draws from OS entropy: two clients with the same configuration and seed add independent
noise, which would otherwise cancel in the difference of their updates.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.local import LocalTrainer, TrainerKey
from fedmodel.federated.shards import client_shard, dataset_for
from fedmodel.federated.weights import delta, global_norm
from fedmodel.privacy.ledger import PrivacyLedger

BASE = {"model": "mlp", "hparam-hidden": "[32]", "dataset": "digits", "num-clients": 5, "clients-per-round": 2}


def trainer(**settings: object) -> tuple[LocalTrainer, FederatedConfig]:
    config = FederatedConfig.from_mapping({**BASE, **settings})
    info = dataset_for(config).info
    mu = float(settings.get("proximal-mu", 0.0))  # type: ignore[arg-type]
    return LocalTrainer(TrainerKey.of(config, input_shape=info.input_shape, num_classes=10, proximal_mu=mu)), config


def test_local_epochs_lower_the_loss_and_are_reproducible() -> None:
    local, config = trainer(**{"client-lr": 0.2})
    shard = client_shard(config, 0)
    start = [w.copy() for w in local.model.get_weights()]
    before = local.evaluate(start, shard.x_train, shard.y_train, task="classification")["loss"]
    w1, metrics = local.fit(start, shard, epochs=5, seed=7)
    after = local.evaluate(w1, shard.x_train, shard.y_train, task="classification")["loss"]
    assert after < 0.5 * before and metrics["train_accuracy"] > 0.5
    w2, _ = local.fit(start, shard, epochs=5, seed=7)  # same start, same seed: the same result
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    w3, _ = local.fit(start, shard, epochs=5, seed=8)
    assert any(not np.allclose(a, b) for a, b in zip(w1, w3, strict=True))


def test_fedprox_keeps_the_update_closer_to_the_global_model() -> None:
    plain, config = trainer(**{"client-lr": 0.2})
    prox, _ = trainer(**{"client-lr": 0.2, "proximal-mu": 5.0})
    prox.model.set_weights(plain.model.get_weights())
    start = [w.copy() for w in plain.model.get_weights()]
    shard = client_shard(config, 1)
    far = global_norm(delta(plain.fit(start, shard, epochs=5, seed=1)[0], start))
    near = global_norm(delta(prox.fit(start, shard, epochs=5, proximal_mu=5.0, seed=1)[0], start))
    assert near < 0.7 * far


def test_local_dp_sgd_records_every_step_in_the_clients_ledger() -> None:
    local, config = trainer(**{"local-dp-noise": 1.0, "local-dp-clip": 1.0, "local-batch-size": 16})
    shard = client_shard(config, 2)
    ledger = PrivacyLedger(unit="example", population=len(shard.x_train))
    start = [w.copy() for w in local.model.get_weights()]
    local.fit(start, shard, epochs=2, seed=0, ledger=ledger)
    local.fit(start, shard, epochs=2, seed=1, ledger=ledger)
    steps_per_round = int(np.ceil(2 * len(shard.x_train) / 16))
    assert ledger.steps == 2 * steps_per_round
    assert ledger.epsilon(1e-5, "rdp") == pytest.approx(PrivacyLedger.from_dict(ledger.to_dict()).epsilon(1e-5, "rdp"))


def test_two_dp_clients_with_the_same_seed_add_independent_noise() -> None:
    settings = {"local-dp-noise": 2.0, "local-dp-clip": 0.1, "local-batch-size": 16, "client-lr": 0.5}
    first, config = trainer(**settings)
    second, _ = trainer(**settings)  # another client, same config and seed (its own trainer, e.g. process)
    start = [w.copy() for w in first.model.get_weights()]
    shard = client_shard(config, 0)
    one = delta(first.fit(start, shard, epochs=1, seed=0)[0], start)
    two = delta(second.fit(start, shard, epochs=1, seed=0)[0], start)
    difference = global_norm([a - b for a, b in zip(one, two, strict=True)])
    # Independent noise: |u1 - u2| is about sqrt(2) |u1|; identical noise would cancel to exactly 0.
    assert difference > 0.5 * global_norm(one)
    assert second.trainable.mechanism.noise_multiplier == 2.0
    assert second.trainable.secure_noise


def test_two_non_private_clients_with_the_same_seed_compute_the_same_update() -> None:
    first, config = trainer(**{"client-lr": 0.2})
    second, _ = trainer(**{"client-lr": 0.2})
    start = [w.copy() for w in first.model.get_weights()]
    shard = client_shard(config, 0)
    for a, b in zip(
        first.fit(start, shard, epochs=2, seed=4)[0], second.fit(start, shard, epochs=2, seed=4)[0], strict=True
    ):
        np.testing.assert_array_equal(a, b)
