"""User .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import load_dataset
from fedmodel.errors import ConfigError


def test_npz_images_are_scaled_and_shapes_inferred(tmp_path: Path) -> None:
    path = tmp_path / "faces.npz"
    x_train = np.full((6, 5, 4), 255, np.uint8)
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 6, 1, 0]), x_test=x_train[:2], y_test=[[1], [2]])
    ds = load_dataset("npz", path=path)
    assert ds.info.input_shape == (5, 4, 1) and ds.info.num_classes == 7
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() == 1.0
    assert ds.y_test.tolist() == [1, 2] and ds.info.name == "faces.npz"
    assert np.array_equal(load_dataset(str(path)).x_train, ds.x_train)  # name ending in .npz is a path


def test_npz_feature_vectors_keep_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "tab.npz"
    x = np.linspace(0, 1, 30, dtype=np.float32).reshape(10, 3)
    np.savez(path, x_train=x, y_train=np.arange(10) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    ds = load_dataset("npz", path=path)
    assert ds.info.input_shape == (3,) and np.array_equal(ds.x_train, x)


def test_npz_missing_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 2)), y_train=np.zeros(2, int))
    with pytest.raises(ConfigError, match=r"missing \['x_test', 'y_test'\], found \['x_train', 'y_train'\]"):
        load_dataset("npz", path=path)


def test_npz_mismatched_lengths_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(2, int), x_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(ConfigError, match="x_train has 3 examples but y_train has 2"):
        load_dataset("npz", path=path)
    with pytest.raises(ConfigError, match="no such file exists"):
        load_dataset("npz", path=tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="could not read"):
        load_dataset("npz", path=tmp_path / "junk.npz")


def test_a_declared_class_count_is_public_metadata_and_an_inferred_one_is_marked(tmp_path: Path) -> None:
    x = np.zeros((4, 3), np.float32)
    inferred = tmp_path / "inferred.npz"
    np.savez(inferred, x_train=x, y_train=[0, 1, 1, 0], x_test=x[:2], y_test=[0, 1])
    assert load_dataset("npz", path=inferred).info.read_from_data == ("num_classes",)
    declared = tmp_path / "declared.npz"
    np.savez(declared, x_train=x, y_train=[0, 1, 1, 0], x_test=x[:2], y_test=[0, 1], num_classes=np.int64(10))
    info = load_dataset("npz", path=declared).info
    assert info.num_classes == 10 and info.read_from_data == ()  # the labels did not decide the model's shape
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=x, y_train=[0, 1, 5, 0], x_test=x[:2], y_test=[0, 1], num_classes=np.int64(3))
    with pytest.raises(ConfigError, match="labels must be < num_classes=3, got a label 5"):
        load_dataset("npz", path=bad)
