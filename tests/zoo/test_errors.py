"""Bad input to the zoo raises ConfigError with a one-line message naming the value and what was expected.

Validation runs before TensorFlow is touched, so these tests go through the TF-free ``count_params``
(``build_model`` shares the same checks; one test confirms it).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.errors import ConfigError
from fedmodel.zoo import available_models, build_model, count_params, get_spec


def error_of(name: str, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        count_params(name, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_spec("resnet50")
    assert "'resnet50'" in str(info.value)
    assert all(name in str(info.value) for name in available_models())
    with pytest.raises(ConfigError, match="resnet50"):
        build_model("resnet50", input_shape=(32, 32, 3), num_classes=10)


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("cnn", (784,), "rank-3 image shape (height, width, channels), got (784,)"),
        ("cnn", (6, 6, 1), "height and width must be >= 7, got input_shape (6, 6, 1)"),
        ("lenet", (28, 3, 1), "height and width must be >= 4, got input_shape (28, 3, 1)"),
        ("resnet20", (30, 30, 3), "divisible by 4 (default 32x32), got input_shape (30, 30, 3)"),
        ("resnet20", (4, 4, 3), ">= 8"),
        ("lstm", (20, 1), "rank-1 tokens shape (sequence_length,), got (20, 1)"),
        ("transformer", (), "non-empty tuple of ints, got ()"),
        ("logreg", (0, 3), "positive ints, got (0, 3)"),
        ("mlp", "784", "non-empty tuple of ints, got '784'"),
        ("mlp", (True, 3), "positive ints, got (True, 3)"),
    ],
)
def test_shapes_a_model_cannot_take(name: str, shape: object, expected: str) -> None:
    message = error_of(name, input_shape=shape, num_classes=10)
    assert message.startswith(f"{name}: ")
    assert expected in message


@pytest.mark.parametrize("num_classes", [1, 0, -3, True, 2.5])
def test_num_classes_below_two(num_classes: object) -> None:
    message = error_of("cnn", input_shape=(28, 28, 1), num_classes=num_classes)
    assert message == f"cnn: num_classes must be an int >= 2, got {num_classes!r}"


def test_unknown_hyperparameter_lists_the_accepted_ones() -> None:
    message = error_of("mlp", input_shape=(784,), num_classes=10, width=3, depth=2)
    assert message == "mlp: unknown hyperparameter(s) ['depth', 'width']; accepted: ['dropout', 'hidden']"
    assert "accepted: none" in error_of("cnn", input_shape=(28, 28, 1), num_classes=10, width=3)


@pytest.mark.parametrize(
    ("name", "shape", "hparams", "expected"),
    [
        ("mlp", (784,), {"hidden": (200, -1)}, "mlp: hidden must be a non-empty sequence of positive ints"),
        ("mlp", (784,), {"hidden": ()}, "got ()"),
        ("mlp", (784,), {"dropout": 1.0}, "mlp: dropout must be a float in [0, 1), got 1.0"),
        ("resnet20", (32, 32, 3), {"groups": 3}, "resnet20: groups must divide the channel counts"),
        ("resnet20", (32, 32, 3), {"groups": 0}, "groups must be a positive int, got 0"),
        ("lstm", (80,), {"units": 0}, "lstm: units must be a positive int, got 0"),
        ("lstm", (80,), {"layers": 1.5}, "layers must be a positive int, got 1.5"),
        ("transformer", (80,), {"d_model": 30}, "d_model must be divisible by heads=4, got 30"),
        ("transformer", (80,), {"dropout": -0.1}, "dropout must be a float in [0, 1), got -0.1"),
    ],
)
def test_bad_hyperparameter_values(name: str, shape: tuple[int, ...], hparams: dict, expected: str) -> None:
    assert expected in error_of(name, input_shape=shape, num_classes=10, **hparams)


def test_build_model_validates_before_building() -> None:
    with pytest.raises(ConfigError, match=r"lstm: unknown hyperparameter\(s\) \['hidden'\]"):
        build_model("lstm", input_shape=(80,), num_classes=86, hidden=(3,))
    with pytest.raises(ConfigError, match="seed must be None or an int >= 0, got -1"):
        build_model("logreg", input_shape=(4,), num_classes=2, seed=-1)


def test_numpy_integers_are_accepted_and_normalized() -> None:
    expected = count_params("mlp", input_shape=(784,), num_classes=10, hidden=(5,))
    shape = tuple(np.array([784]))
    assert count_params("mlp", input_shape=shape, num_classes=np.int64(10), hidden=[np.int32(5)]) == expected  # type: ignore[arg-type]
    hparams = get_spec("lstm").make_hparams({"units": np.int64(16)})
    assert type(hparams.units) is int
