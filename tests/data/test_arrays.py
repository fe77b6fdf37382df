"""Array helpers: scaling, label shapes, stratified split, capping."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.data import make_synthetic
from fedmodel.data.arrays import cap_examples, images_to_unit_float, labels_to_int64, stratified_split
from fedmodel.errors import ConfigError


def test_uint8_images_scale_to_unit_interval_and_gain_channel_axis() -> None:
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)  # (1, 2, 2)
    out = images_to_unit_float(x, name="t")
    assert out.dtype == np.float32 and out.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)


def test_float_images_outside_unit_interval_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"got range \[0, 2\]"):
        images_to_unit_float(np.array([[0.0, 2.0]]), name="t")


def test_labels_column_is_flattened_and_bad_labels_rejected() -> None:
    assert labels_to_int64(np.array([[1], [2]], np.uint8), name="t").tolist() == [1, 2]
    with pytest.raises(ConfigError, match="whole numbers"):
        labels_to_int64(np.array([0.5, 1.0]), name="t")
    with pytest.raises(ConfigError, match="must be >= 0, got minimum -1"):
        labels_to_int64(np.array([-1, 1]), name="t")


def test_stratified_split_covers_all_indices_and_keeps_class_ratio() -> None:
    labels = np.repeat(np.arange(4), 50)
    train, test = stratified_split(labels, test_size=0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(200))
    assert np.bincount(labels[test]).tolist() == [10, 10, 10, 10]


def test_cap_examples_subsets_each_split_deterministically() -> None:
    ds = make_synthetic(num_examples=100, seed=1)
    a = cap_examples(ds, max_examples=30, seed=5)
    b = cap_examples(ds, max_examples=30, seed=5)
    assert (a.num_train, a.num_test) == (30, 20)  # the 20-example test split is under the cap
    assert np.array_equal(a.x_train, b.x_train)
    # every kept example is an original one, in the original order
    positions = [int(np.flatnonzero((ds.x_train == row).all(axis=(1, 2, 3)))[0]) for row in a.x_train]
    assert positions == sorted(positions)
