"""DP batches: which examples a step uses comes from OS entropy, never from a seed; the rates are right.

Each example's feature is its index, so a batch shows which examples it holds. Statistical tolerances:
2,000 Poisson batches of 200 examples at q = 0.05 hold 20,000 examples on average (std 97): within 2%
(4 sigma); an example joins 100 times on average (std 9.7): every one of 200 within 100 +- 50 (5 sigma).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.privacy.engine.batches import poisson_batches, shuffled_batches

N = 200
X = np.arange(N, dtype=np.float32)[:, None]
Y = np.arange(N, dtype=np.int64)


def indices(data: tf.data.Dataset, count: int) -> list[list[int]]:
    return [[int(v) for v in x[:, 0]] for x, _, _ in data.take(count).as_numpy_iterator()]


def seed_everything(seed: int) -> None:
    tf.keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow: what --seed does


def test_poisson_batches_do_not_follow_any_seed() -> None:
    seed_everything(0)
    first = indices(poisson_batches(X, Y, sampling_rate=0.1), 5)
    seed_everything(0)
    second = indices(poisson_batches(X, Y, sampling_rate=0.1), 5)
    assert first != second
    data = poisson_batches(X, Y, sampling_rate=0.1)
    assert indices(data, 5) != indices(data, 5)  # each iteration of the dataset draws a fresh generator


def test_poisson_batches_have_rate_q_for_every_example() -> None:
    batches = indices(poisson_batches(X, Y, sampling_rate=0.05), 2000)
    sizes = np.array([len(b) for b in batches])
    assert sizes.sum() == pytest.approx(20_000, rel=0.02)
    counts = np.bincount(np.concatenate(batches), minlength=N)
    assert counts.min() >= 50 and counts.max() <= 150
    assert all(b == sorted(set(b)) for b in batches)  # no example twice in a batch


def test_an_injected_generator_makes_batches_reproducible_and_empty_batches_are_yielded() -> None:
    first = indices(poisson_batches(X[:10], Y[:10], sampling_rate=0.01, rng=np.random.default_rng(3)), 50)
    second = indices(poisson_batches(X[:10], Y[:10], sampling_rate=0.01, rng=np.random.default_rng(3)), 50)
    assert first == second
    assert sum(1 for b in first if not b) > 30  # P(empty) = 0.99^10 = 0.90: empty steps happen


def test_shuffled_batches_cover_each_example_once_per_pass_and_do_not_follow_any_seed() -> None:
    seed_everything(0)
    first = indices(shuffled_batches(X, Y, batch_size=32, drop_remainder=False), 7)
    seed_everything(0)
    second = indices(shuffled_batches(X, Y, batch_size=32, drop_remainder=False), 7)
    assert sorted(i for b in first for i in b) == list(range(N))  # 6 batches of 32 and one of 8
    assert first != second
    dropped = indices(shuffled_batches(X, Y, batch_size=32, drop_remainder=True, rng=np.random.default_rng(1)), 12)
    assert [len(b) for b in dropped] == [32] * 12


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sampling_rate must be in \(0, 1\], got 0"):
        poisson_batches(X, Y, sampling_rate=0)
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator or None, got 7"):
        poisson_batches(X, Y, sampling_rate=0.1, rng=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        shuffled_batches(X, Y, batch_size=0, drop_remainder=False)
