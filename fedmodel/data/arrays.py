"""Array helpers shared by the loaders: scaling images, shaping labels, splitting and capping.

All functions are pure and numpy-only, so the embedded and file loaders never import TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedmodel.data.dataset import Dataset
from fedmodel.errors import ConfigError


def images_to_unit_float(x: np.ndarray, *, name: str) -> np.ndarray:
    """Return images as float32 in [0, 1] with a channel axis.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, H, W)`` or ``(N, H, W, C)`` images, or ``(N, F)`` feature vectors. uint8 data is divided
        by 255; float data must already lie in [0, 1] and is only cast to float32.
    name : str
        Dataset name, for error messages.

    Returns
    -------
    numpy.ndarray
        float32 array; ``(N, H, W)`` input becomes ``(N, H, W, 1)``.
    """
    if x.ndim < 2:
        raise ConfigError(f"{name}: inputs must have shape (N, ...) with at least 2 axes, got {x.shape}")
    if x.dtype == np.uint8:
        out = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32)
        if out.size and (float(out.min()) < 0.0 or float(out.max()) > 1.0):
            raise ConfigError(
                f"{name}: non-uint8 inputs must already lie in [0, 1], "
                f"got range [{float(out.min()):g}, {float(out.max()):g}]"
            )
    else:
        raise ConfigError(f"{name}: inputs must be uint8, integer or float, got dtype {x.dtype}")
    if out.ndim == 3:
        out = out[..., np.newaxis]
    return out


def labels_to_int64(y: np.ndarray, *, name: str) -> np.ndarray:
    """Return class labels as int64 of shape ``(N,)``; ``(N, 1)`` is flattened.

    Raises
    ------
    ConfigError
        When the labels are not whole non-negative numbers or have another shape.
    """
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"{name}: labels must have shape (N,) or (N, 1), got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ConfigError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ConfigError(f"{name}: labels must be whole numbers, got non-integer values")
    out = y.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise ConfigError(f"{name}: labels must be >= 0, got minimum {int(out.min())}")
    return out


def stratified_split(labels: np.ndarray, *, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split of example indices (scikit-learn's ``train_test_split``).

    Returns
    -------
    (train_idx, test_idx) : tuple of numpy.ndarray
        Sorted int64 index arrays that together cover ``range(len(labels))`` exactly once.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels), dtype=np.int64)
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    return np.sort(train_idx), np.sort(test_idx)


def cap_examples(dataset: Dataset, *, max_examples: int, seed: int) -> Dataset:
    """Keep at most ``max_examples`` training and at most ``max_examples`` test examples.

    The kept examples are a seeded random subset in their original order, so results are
    deterministic given ``seed``; ``groups_train`` is subset alongside.
    """
    if max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1 or None, got {max_examples}")
    rng = np.random.default_rng(seed)
    train = _subset(len(dataset.x_train), max_examples, rng)
    test = _subset(len(dataset.x_test), max_examples, rng)
    groups = None if dataset.groups_train is None else dataset.groups_train[train]
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[train],
        y_train=dataset.y_train[train],
        x_test=dataset.x_test[test],
        y_test=dataset.y_test[test],
        groups_train=groups,
    )


def _subset(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)
