"""The analytic parameter counts agree with Keras beyond the defaults: odd shapes and non-default hparams.

cnn and lenet switch their second convolution to ``same`` padding for small inputs; the shapes below sit
on both sides of each switch and include non-square images.
"""

from __future__ import annotations

import pytest

from fedmodel.zoo import build_model, count_params

pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")

CASES = [
    ("cnn", (7, 7, 1), {}),  # smallest accepted
    ("cnn", (12, 12, 3), {}),  # largest with the 'same' second conv
    ("cnn", (13, 13, 1), {}),  # smallest with the tutorial's 'valid' second conv
    ("cnn", (28, 10, 1), {}),  # non-square, small side rules
    ("lenet", (4, 4, 1), {}),
    ("lenet", (11, 11, 1), {}),
    ("lenet", (12, 30, 3), {}),
    ("lenet", (32, 32, 3), {}),
    ("logreg", (5, 7, 2), {}),
    ("mlp", (10,), {"hidden": [16, 8, 4], "dropout": 0.5}),
    ("resnet20", (12, 16, 3), {"groups": 16}),
    ("lstm", (7,), {"embedding_dim": 4, "units": 16, "layers": 3}),
    ("transformer", (9,), {"d_model": 24, "heads": 3, "layers": 3, "dropout": 0.1}),
]


@pytest.mark.parametrize(("name", "shape", "hparams"), CASES)
def test_analytic_count_matches_keras(name: str, shape: tuple[int, ...], hparams: dict) -> None:
    model = build_model(name, input_shape=shape, num_classes=3, **hparams)
    assert model.output_shape[-1] == 3
    assert count_params(name, input_shape=shape, num_classes=3, **hparams) == model.count_params()
