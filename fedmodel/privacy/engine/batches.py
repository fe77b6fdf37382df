"""Batches for DP-SGD: Poisson subsampling (what the accountant assumes) or shuffled fixed-size batches.

Which examples join a step is part of what the privacy guarantee keeps secret, so both samplers draw from
a NumPy generator keyed with fresh OS entropy (:func:`fedmodel.privacy.randomness.numpy_rng`), never from
``--seed``: a fresh one each time the dataset is iterated. ``rng`` is for tests only (a seeded generator
makes the batches predictable).

Poisson batches vary in size (and may be empty). They are fed with an unknown batch dimension, so the
compiled train step is traced once and never retraced (a test counts the traces), and no compute is spent
on padding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from fedmodel.privacy import randomness

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def _signature(x: np.ndarray, y: np.ndarray) -> tuple[tf.TensorSpec, tf.TensorSpec, tf.TensorSpec]:
    return (
        tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
        tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)),
        tf.TensorSpec((None,), tf.float32),
    )


def _check_rng(rng: np.random.Generator | None) -> None:
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {rng!r}")


def _source(rng: np.random.Generator | None) -> np.random.Generator:
    """The test's generator, or a fresh secure one."""
    return rng if rng is not None else randomness.numpy_rng()


def poisson_batches(
    x: np.ndarray, y: np.ndarray, *, sampling_rate: float, rng: np.random.Generator | None = None
) -> tf.data.Dataset:
    """An endless dataset of ``(x, y, mask)``: each example joins each batch with probability ``q``.

    ``rng``: ``None`` (a secure generator per iteration of the dataset), or a test's generator.
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    _check_rng(rng)  # now, not when the dataset is first read
    n = len(x)

    def draw() -> Iterator[Batch]:
        source = _source(rng)
        while True:
            idx = np.flatnonzero(source.random(n) < sampling_rate)
            yield x[idx], y[idx], np.ones(len(idx), np.float32)

    return tf.data.Dataset.from_generator(draw, output_signature=_signature(x, y)).prefetch(2)


def shuffled_batches(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, drop_remainder: bool, rng: np.random.Generator | None = None
) -> tf.data.Dataset:
    """An endless dataset of ``(x, y, mask)``: fixed-size batches of a reshuffled pass per epoch.

    ``rng``: ``None`` (a secure generator per iteration of the dataset), or a test's generator.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    _check_rng(rng)
    n = len(x)

    def draw() -> Iterator[Batch]:
        source = _source(rng)
        while True:
            order = source.permutation(n)
            stop = n - n % batch_size if drop_remainder else n
            for start in range(0, stop, batch_size):
                idx = np.sort(order[start : start + batch_size])
                yield x[idx], y[idx], np.ones(len(idx), np.float32)

    return tf.data.Dataset.from_generator(draw, output_signature=_signature(x, y)).prefetch(2)
