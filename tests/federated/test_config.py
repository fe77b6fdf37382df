"""FederatedConfig: kebab-case settings in, validated frozen config out."""

from __future__ import annotations

import pytest

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig


def test_from_mapping_reads_kebab_case_and_hparams() -> None:
    config = FederatedConfig.from_mapping(
        {"num-clients": 20, "clients-per-round": 4, "hparam-hidden": "[32, 16]", "dp-noise": 1, "local_epochs": 2}
    )
    assert config.num_clients == 20 and config.sampling_rate == 0.2
    assert config.hparams == {"hidden": [32, 16]}
    assert config.dp_noise == 1.0 and config.local_epochs == 2
    again = FederatedConfig.from_mapping(config.to_run_config())
    assert again == config


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"num-clinets": 3}, "unknown setting 'num-clinets'"),
        ({"num-clients": 3, "clients-per-round": 5}, "clients-per-round must be <= num-clients, got 5 > 3"),
        ({"rounds": 0}, "rounds must be an integer >= 1, got 0"),
        ({"client-lr": -0.1}, "client-lr must be a number > 0, got -0.1"),
        ({"strategy": "fedsgd"}, "strategy must be one of"),
        ({"dp-noise": 1.0, "strategy": "krum"}, "not a mean"),
        ({"target-epsilon": 3.0}, "target-epsilon needs client-level DP"),
        ({"delta": 1.5}, "delta"),
    ],
)
def test_bad_settings_name_the_value(values: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        FederatedConfig.from_mapping(values)
    assert fragment in str(err.value)


def test_switches_accept_true_and_false_as_typed_on_the_command_line() -> None:
    config = FederatedConfig.from_mapping({"dp-outputs-only": "true", "dp-adaptive": "False", "dp-noise": 1.0})
    assert config.dp_outputs_only is True and config.dp_adaptive is False
    with pytest.raises(ConfigError, match="dp-outputs-only must be true or false, got 'yes'"):
        FederatedConfig.from_mapping({"dp-outputs-only": "yes"})
    with pytest.raises(ConfigError, match="client-sampling must be one of poisson, fixed-size; got 'random'"):
        FederatedConfig.from_mapping({"client-sampling": "random"})


def test_every_setting_is_declared_for_flwr_run_and_the_declared_defaults_are_valid() -> None:
    """`flwr run` rejects --run-config keys that pyproject.toml does not declare (the DP keys once were not)."""
    import dataclasses
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(FederatedConfig)} - {"hparams"}
    assert fields <= set(declared), sorted(fields - set(declared))
    config = FederatedConfig.from_mapping(declared)
    assert config.dp_noise is None and config.local_dp_noise is None and config.run_dir is None
    assert config.quorum == config.clients_per_round


def test_fail_partitions_from_the_command_line_is_a_list_of_ids_and_garbage_is_refused() -> None:
    assert FederatedConfig.from_mapping({"fail-partitions": (0, 3)}).failing_partitions == {0, 3}  # --set k=0,3
    assert FederatedConfig.from_mapping({"fail-partitions": 4}).failing_partitions == {4}
    assert FederatedConfig.from_mapping({"fail-partitions": "1, 2"}).failing_partitions == {1, 2}
    with pytest.raises(ConfigError, match="fail-partitions must be comma-separated"):
        FederatedConfig.from_mapping({"fail-partitions": "a,b"})


def test_fixed_size_dp_sampling_cannot_start_a_round_with_fewer_clients_than_it_draws() -> None:
    with pytest.raises(ConfigError, match="min-available-clients must be at least that"):
        FederatedConfig(
            num_clients=10, clients_per_round=5, dp_noise=1.0, client_sampling="fixed-size", min_available_clients=3
        )
    assert FederatedConfig(num_clients=10, clients_per_round=5, dp_noise=1.0, min_available_clients=3).quorum == 3
