"""Privacy randomness comes from OS entropy: no seed (NumPy's, TensorFlow's, Python's) reaches it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.privacy import randomness


def test_numpy_generators_are_fresh_every_time_whatever_the_global_seeds() -> None:
    tf.keras.utils.set_random_seed(0)
    a = randomness.numpy_rng().integers(0, 2**62, 4)
    tf.keras.utils.set_random_seed(0)
    b = randomness.numpy_rng().integers(0, 2**62, 4)
    assert not np.array_equal(a, b)
    assert randomness.is_secure(randomness.numpy_rng())
    assert not randomness.is_secure(np.random.default_rng(0))  # a test's generator says so
    assert isinstance(randomness.numpy_rng().bit_generator, np.random.Philox)


def test_tensorflow_generators_are_fresh_philox_states() -> None:
    tf.random.set_seed(0)
    a = randomness.tf_generator()
    tf.random.set_seed(0)
    b = randomness.tf_generator()
    assert a.algorithm == b.algorithm == tf.random.Algorithm.PHILOX.value
    assert not np.array_equal(a.state.numpy(), b.state.numpy())
    assert not np.array_equal(a.normal([8]).numpy(), b.normal([8]).numpy())
    assert randomness.is_secure(a)
    assert not randomness.is_secure(tf.random.Generator.from_seed(0))


def test_entropy_has_the_bits_asked_for() -> None:
    values = [randomness.entropy(8) for _ in range(2000)]
    assert min(values) >= 0 and max(values) < 256
    assert len(set(values)) > 250  # 2,000 draws miss a given value with probability 4e-4
    with pytest.raises(ValueError, match="bits must be an int >= 1, got 0"):
        randomness.entropy(0)
