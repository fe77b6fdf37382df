"""The seeded synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.data import load_dataset, make_synthetic
from fedmodel.errors import ConfigError


def test_default_synthetic_is_small_balanced_and_in_range() -> None:
    ds = load_dataset("synthetic")
    assert ds.x_train.shape == (800, 8, 8, 1) and ds.x_test.shape == (200, 8, 8, 1)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert counts.tolist() == [100] * 10


def test_synthetic_is_learnable_by_nearest_class_mean() -> None:
    ds = make_synthetic(num_examples=500, input_shape=(16,), num_classes=5, seed=2)
    means = np.stack([ds.x_train[ds.y_train == c].mean(axis=0) for c in range(5)])
    pred = np.argmin(((ds.x_test[:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert (pred == ds.y_test).mean() > 0.95


def test_synthetic_is_deterministic_per_seed() -> None:
    a, b, c = make_synthetic(seed=4), make_synthetic(seed=4), make_synthetic(seed=5)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
        ({"input_shape": (0, 3)}, "input_shape"),
        ({"num_examples": 2}, "leaves an empty train or test split"),
        ({"test_fraction": 1.0}, "test_fraction must lie in"),
    ],
)
def test_synthetic_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_synthetic(**kwargs)  # type: ignore[arg-type]
