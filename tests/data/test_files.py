"""User .npz files."""

from __future__ import annotations

from collections.abc import Callable
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


def _valid_npz_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.npz"
    x = np.linspace(0, 1, 40, dtype=np.float32).reshape(10, 4)
    np.savez(path, x_train=x, y_train=np.arange(10) % 2, x_test=x[:4], y_test=np.arange(4) % 2)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda good: good[: len(good) // 2], "truncated or damaged: BadZipFile"),
        (lambda good: good[:-40], "truncated or damaged"),
        (lambda good: b"x_train,y_train\n1,2\n", "the file starts with b'x_train,"),
        (lambda good: b"", "the file is empty"),
        (lambda good: b"\x93NUMPY" + good[8:64], "a single .npy array"),
    ],
    ids=["truncated-half", "truncated-tail", "text", "empty", "npy"],
)
def test_an_unreadable_npz_is_a_config_error_naming_the_file(
    tmp_path: Path, make: Callable[[bytes], bytes], detail: str
) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(make(_valid_npz_bytes(tmp_path)))
    with pytest.raises(ConfigError, match=r"^x\.npz: not a readable \.npz \(") as err:
        load_dataset(str(path))
    assert detail in str(err.value)


def test_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    x = np.empty(4, dtype=object)
    x[:] = [Exploding(), 1, "a", None]
    np.savez(path, x_train=x, y_train=np.arange(4) % 2, x_test=np.zeros((2, 3)), y_test=[0, 1])
    with pytest.raises(ConfigError, match=r"objects\.npz: not a readable \.npz \(array 'x_train' holds Python objects"):
        load_dataset("npz", path=path)
    assert not Exploding.unpickled


class Exploding:
    """Records being unpickled: a loader that unpickles would run this file's code."""

    unpickled = False

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return (_mark_unpickled, ())


def _mark_unpickled() -> None:
    Exploding.unpickled = True


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


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
def test_nan_and_inf_are_refused_at_load_naming_the_array_and_the_count(tmp_path: Path, key: str) -> None:
    arrays = {
        "x_train": np.full((6, 3), 0.5),
        "y_train": np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]),  # float labels holding whole numbers are accepted
        "x_test": np.full((4, 3), 0.25),
        "y_test": np.array([0.0, 1.0, 0.0, 1.0]),
    }
    np.savez(tmp_path / "fine.npz", **arrays)
    assert load_dataset(str(tmp_path / "fine.npz")).x_train.shape == (6, 3)
    bad = arrays[key].copy()
    bad.flat[0], bad.flat[1], bad.flat[3] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "bad.npz", **{**arrays, key: bad})
    with pytest.raises(ConfigError, match=rf"^bad\.npz: array '{key}' holds 3 non-finite values \(1 NaN, 2 Inf\)"):
        load_dataset(str(tmp_path / "bad.npz"))
