"""Simulated attacks do what they say; norm bounding limits a boosted update to the bound."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedmodel.errors import ConfigError
from fedmodel.federated.attacks import AttackConfig, flip_labels, poison_update
from fedmodel.federated.norm_bound import NormBound
from fedmodel.federated.weights import delta, global_norm

OLD = [np.zeros((4, 3), np.float32), np.ones(3, np.float32)]
NEW = [np.full((4, 3), 0.5, np.float32), np.full(3, 2.0, np.float32)]  # update: 0.5 and 1.0 per coordinate


def test_malicious_clients_follow_the_fraction_and_the_seed() -> None:
    attack = AttackConfig(kind="sign-flip", fraction=0.3)
    bad = attack.malicious(20, seed=1)
    assert len(bad) == 6 and bad <= set(range(20))
    assert attack.malicious(20, seed=1) == bad  # an experiment's setup: reproducible
    assert AttackConfig(kind="none", fraction=0.3).malicious(20, seed=1) == frozenset()
    assert AttackConfig(kind="scale", fraction=0.0).malicious(20, seed=1) == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "backdoor"}, "attack must be one of"),
        ({"kind": "scale", "fraction": 1.0}, r"attack-fraction must be in \[0, 1\), got 1.0"),
        ({"kind": "scale", "scale": 0}, "attack-scale must be a finite number > 0, got 0"),
    ],
)
def test_bad_attack_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AttackConfig(**kwargs)


def test_update_attacks() -> None:
    rng = np.random.default_rng(0)
    honest = delta(NEW, OLD)
    flipped = delta(poison_update(NEW, OLD, kind="sign-flip", scale=2.0, rng=rng), OLD)
    assert all(np.allclose(f, -2.0 * h) for f, h in zip(flipped, honest, strict=True))
    boosted = delta(poison_update(NEW, OLD, kind="scale", scale=10.0, rng=rng), OLD)
    assert all(np.allclose(b, 10.0 * h) for b, h in zip(boosted, honest, strict=True))
    noise = delta(poison_update(NEW, OLD, kind="noise", scale=3.0, rng=rng), OLD)
    # the noise update is unrelated to the honest one, with about 3x its size
    assert global_norm(noise) == pytest.approx(3.0 * global_norm(honest), rel=0.6)
    assert all(np.isnan(a).all() for a in poison_update(NEW, OLD, kind="nan", scale=1.0, rng=rng))
    assert poison_update(NEW, OLD, kind="label-flip", scale=1.0, rng=rng) is NEW
    assert [a.dtype for a in poison_update(NEW, OLD, kind="scale", scale=2.0, rng=rng)] == [np.float32] * 2


def test_flip_labels() -> None:
    assert flip_labels(np.array([0, 1, 9, 3]), 10).tolist() == [9, 8, 0, 6]


def _reply(arrays: list[np.ndarray], examples: int = 1) -> Message:
    record = ArrayRecord(OrderedDict((str(i), Array(a)) for i, a in enumerate(arrays)))
    content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, dst_node_id=0, message_type="train")


def test_norm_bound_clips_each_update_before_the_inner_strategy_averages() -> None:
    current = [np.zeros(4, np.float32)]
    strategy = NormBound(FedAvg(), bound=1.0)
    strategy.current = ArrayRecord(OrderedDict({"0": Array(current[0])}))
    honest = _reply([np.array([0.3, 0.0, 0.0, 0.0], np.float32)])
    boosted = _reply([np.array([0.0, 100.0, 0.0, 0.0], np.float32)])  # norm 100: clipped to 1
    aggregated, _ = strategy.aggregate_train(1, [honest, boosted])
    assert aggregated is not None
    # FedAvg of (0.3, 0, 0, 0) and (0, 1, 0, 0) with equal weights
    assert np.allclose(aggregated.to_numpy_ndarrays()[0], [0.15, 0.5, 0.0, 0.0])
    assert strategy.clipped == 1
    with pytest.raises(ValueError, match="norm bound must be > 0"):
        NormBound(FedAvg(), bound=0.0)


def _client_update(config, partition_id: int, weights: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    from flwr.app import ConfigRecord, Context

    from fedmodel.federated.client_app import make_client_app
    from fedmodel.federated.node_data import DataSpec
    from fedmodel.federated.shards import dataset_for

    spec = DataSpec.of(dataset_for(config))
    message = Message(
        RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({**spec.to_config(), "server-round": 1})}),
        dst_node_id=5,
        message_type="train",
    )
    context = Context(run_id=1, node_id=5, node_config={"partition-id": partition_id}, state=RecordDict(),
                      run_config={})  # fmt: skip
    reply = make_client_app(config)(message, context)
    assert not reply.has_error()
    return delta(reply.content.array_records["arrays"].to_numpy_ndarrays(), weights)


def test_the_client_app_attacks_only_as_the_malicious_clients() -> None:
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.shards import dataset_for

    honest_config = FederatedConfig(model="mlp", hparams={"hidden": [8]}, dataset="digits", num_clients=4,
                                    clients_per_round=2)  # fmt: skip
    attacked = FederatedConfig(**{**honest_config.to_dict(), "attack": "sign-flip", "attack_fraction": 0.5,
                                  "attack_scale": 3.0})  # fmt: skip
    bad = attacked.attack_config.malicious(4, seed=0)
    good = next(i for i in range(4) if i not in bad)
    evil = next(iter(bad))
    info = dataset_for(honest_config).info
    key = TrainerKey.of(honest_config, input_shape=info.input_shape, num_classes=info.num_classes, proximal_mu=0.0)
    weights = trainer_for(key).model.get_weights()
    # same seed, same shard, same round: an honest client's update is the same in both runs ...
    for a, b in zip(_client_update(attacked, good, weights), _client_update(honest_config, good, weights), strict=True):
        assert np.allclose(a, b, atol=1e-6)
    # ... and a malicious one sends its honest update reversed and scaled by 3
    evil_sent = _client_update(attacked, evil, weights)
    evil_honest = _client_update(honest_config, evil, weights)
    for a, b in zip(evil_sent, evil_honest, strict=True):
        assert np.allclose(a, -3.0 * b, atol=1e-5)


def test_federated_settings_for_attacks_and_defenses() -> None:
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.strategies import make_strategy

    with pytest.raises(ConfigError, match=r"with client-level DP dp-clip=1\.0 bounds them already"):
        FederatedConfig(dp_noise=1.0, norm_bound=2.0)
    with pytest.raises(ConfigError, match="attack must be one of"):
        FederatedConfig.from_mapping({"attack": "backdoor"})
    with pytest.raises(ConfigError, match="krum-keep must be an integer >= 1"):
        FederatedConfig(strategy="multikrum", krum_keep=0)
    config = FederatedConfig.from_mapping({"norm-bound": "none", "attack": "scale", "attack-fraction": 0.2})
    assert config.norm_bound is None and config.attack_config.kind == "scale"
    bounded = make_strategy(FederatedConfig.from_mapping({"norm-bound": 1, "strategy": "fedmedian"}))
    assert isinstance(bounded, NormBound) and bounded.bound == 1.0 and type(bounded.strategy).__name__ == "FedMedian"
    multikrum = make_strategy(FederatedConfig(strategy="multikrum", krum_byzantine=2, krum_keep=3))
    assert type(multikrum).__name__ == "MultiKrum"
