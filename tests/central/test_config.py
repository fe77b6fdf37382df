"""TrainConfig validates itself: every bad value gives a ConfigError that names it."""

from __future__ import annotations

import pytest

from fedmodel.central.config import TrainConfig
from fedmodel.errors import ConfigError


def test_defaults_are_valid_and_frozen() -> None:
    config = TrainConfig(model="cnn", dataset="digits")
    assert config.learning_rate > 0
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("learning_rate", -0.1, "learning_rate must be a positive number, got -0.1"),
        ("learning_rate", 0.0, "learning_rate"),
        ("epochs", 0, "epochs must be an integer >= 1, got 0"),
        ("batch_size", -4, "batch_size"),
        ("optimizer", "adagrad", "optimizer must be one of sgd, momentum, adam, rmsprop; got 'adagrad'"),
        ("strategy", "tpu", "strategy must be one of"),
        ("precision", "float8", "precision must be one of"),
        ("momentum", 1.5, "momentum must be in [0, 1)"),
        ("l2", -1.0, "l2 must be a number >= 0"),
        ("validation_fraction", 1.0, "validation_fraction"),
        ("early_stopping", -1, "early_stopping"),
    ],
)
def test_bad_values_are_rejected_with_their_value(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(model="cnn", dataset="digits", **{field: value})  # type: ignore[arg-type]
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_early_stopping_needs_validation() -> None:
    with pytest.raises(ConfigError, match="validation"):
        TrainConfig(model="cnn", dataset="digits", early_stopping=3, validation_fraction=0.0)


def test_hparams_are_immutable_and_serializable() -> None:
    config = TrainConfig(model="mlp", dataset="digits", hparams={"hidden": (32,)})
    with pytest.raises(TypeError):
        config.hparams["hidden"] = (8,)  # type: ignore[index]
    assert config.to_dict()["hparams"] == {"hidden": (32,)}
