"""The discrete Gaussian sampler against the exact probabilities (and tensorflow-privacy's sampler)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.privacy import discrete_gaussian, randomness


@pytest.mark.parametrize("scale", [0.6, 3.3, 40.0])
def test_frequencies_match_the_exact_pmf(scale: float) -> None:
    draws = discrete_gaussian.sample(scale, 400_000, rng=np.random.default_rng(1))
    assert draws.dtype == np.int64
    support = np.arange(-int(4 * scale) - 2, int(4 * scale) + 3)
    freq = np.array([np.mean(draws == k) for k in support])
    exact = discrete_gaussian.pmf(scale, support)
    # binomial standard error of each frequency; 5 sigma
    assert np.all(np.abs(freq - exact) <= 5 * np.sqrt(exact * (1 - exact) / len(draws)) + 1e-6)
    assert np.var(draws) == pytest.approx(discrete_gaussian.variance(scale), rel=0.02)


def test_variance_is_a_little_below_scale_squared_and_meets_it_for_large_scales() -> None:
    assert discrete_gaussian.variance(0.5) < 0.25
    assert discrete_gaussian.variance(3.0) == pytest.approx(9.0, rel=1e-8)


def test_tensorflow_privacy_sampler_agrees_at_an_integer_scale() -> None:
    # the peer sampler (integer scales only) against the same exact pmf: both implement CKS20 Algorithm 3
    import tensorflow as tf
    from tensorflow_privacy.privacy.dp_query import discrete_gaussian_utils

    tf.random.set_seed(3)
    draws = discrete_gaussian_utils.sample_discrete_gaussian(3, (200_000,), tf.int64).numpy()
    ours = discrete_gaussian.sample(3.0, 200_000, rng=np.random.default_rng(2))
    support = np.arange(-12, 13)
    exact = discrete_gaussian.pmf(3.0, support)
    tol = 5 * np.sqrt(exact * (1 - exact) / 200_000) + 1e-6
    for sample in (draws, ours):
        assert np.all(np.abs(np.array([np.mean(sample == k) for k in support]) - exact) <= tol)


def test_real_runs_draw_fresh_noise_and_bad_scales_fail() -> None:
    a = discrete_gaussian.sample(5.0, 1000, rng=randomness.numpy_rng())
    b = discrete_gaussian.sample(5.0, 1000, rng=randomness.numpy_rng())
    assert not np.array_equal(a, b)
    assert not discrete_gaussian.sample(0.0, 10, rng=np.random.default_rng()).any()
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        discrete_gaussian.sample(-1.0, 3, rng=np.random.default_rng())
