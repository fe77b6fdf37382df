"""Batches for DP-SGD: Poisson subsampling (what the accountant assumes) or shuffled fixed-size batches.

Poisson batches vary in size. They are fed with an unknown batch dimension, so the compiled train step
is traced once and never retraced (a test counts the traces), and no compute is spent on padding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf


def _signature(x: np.ndarray, y: np.ndarray) -> tuple[tf.TensorSpec, tf.TensorSpec, tf.TensorSpec]:
    return (
        tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
        tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)),
        tf.TensorSpec((None,), tf.float32),
    )


def poisson_batches(x: np.ndarray, y: np.ndarray, *, sampling_rate: float, seed: int) -> tf.data.Dataset:
    """An endless dataset of ``(x, y, mask)``: each example joins each batch with probability ``q``."""
    n = len(x)

    def draw() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        while True:
            idx = np.flatnonzero(rng.random(n) < sampling_rate)
            yield x[idx], y[idx], np.ones(len(idx), np.float32)

    return tf.data.Dataset.from_generator(draw, output_signature=_signature(x, y)).prefetch(2)


def shuffled_batches(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, drop_remainder: bool
) -> tf.data.Dataset:
    """An endless dataset of ``(x, y, mask)``: fixed-size batches of a reshuffled pass per epoch."""
    n = len(x)

    def draw() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(n)
            stop = n - n % batch_size if drop_remainder else n
            for start in range(0, stop, batch_size):
                idx = np.sort(order[start : start + batch_size])
                yield x[idx], y[idx], np.ones(len(idx), np.float32)

    return tf.data.Dataset.from_generator(draw, output_signature=_signature(x, y)).prefetch(2)
