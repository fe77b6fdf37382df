"""The discrete Gaussian on the integers: sampling (Canonne, Kamath & Steinke 2020) and its exact moments.

``N_Z(0, s^2)`` puts mass proportional to ``exp(-k^2 / (2 s^2))`` on each integer ``k``. Its variance is a
little below ``s^2`` (:func:`variance` sums the series); for ``s >= 1`` the two agree to 1e-8 relative.

The sampler is Algorithm 3 of Canonne, Kamath & Steinke ("The Discrete Gaussian for Differential
Privacy", NeurIPS 2020): draw ``Y`` from the discrete Laplace with scale ``t = floor(s) + 1`` (a difference
of two geometric variables) and accept it with probability ``exp(-(|Y| - s^2/t)^2 / (2 s^2))``; accepted
draws are exactly discrete Gaussian. Vectorised with floating-point Bernoulli trials, as
tensorflow-privacy's sampler is (the paper's exact rational arithmetic is out of reach in NumPy).

Why not tensorflow-privacy's ``sample_discrete_gaussian``: it draws from TensorFlow's stateful global
generator, which ``tf.random.set_seed(--seed)`` makes reproducible, so its noise would follow the run's
public seed. Here the caller passes a generator, from :func:`fedmodel.privacy.randomness.numpy_rng` (OS
entropy) in every real run. ``tests/privacy/test_discrete_gaussian.py`` checks both samplers against the
exact probabilities.
"""

from __future__ import annotations

import math

import numpy as np

#: Each rejection loop draws this many times the still-missing count (acceptance is about 0.7 or more).
OVERSAMPLE = 1.6


def sample(scale: float, size: int, *, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent draws of ``N_Z(0, scale^2)`` as int64 (``scale = 0``: zeros)."""
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"discrete Gaussian scale must be a finite number >= 0, got {scale!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if scale == 0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(scale) + 1
    p = -math.expm1(-1.0 / t)  # success probability of the geometric variables: 1 - exp(-1/t)
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        draw = max(64, int(OVERSAMPLE * (size - filled)))
        # NumPy's geometric counts trials (>= 1); the discrete Laplace is the difference of two failure counts
        y = rng.geometric(p, draw) - rng.geometric(p, draw)
        accept = rng.random(draw) < np.exp(-((np.abs(y) - scale**2 / t) ** 2) / (2 * scale**2))
        kept = y[accept][: size - filled]
        out[filled : filled + len(kept)] = kept
        filled += len(kept)
    return out


def pmf(scale: float, support: np.ndarray) -> np.ndarray:
    """The exact probabilities of ``N_Z(0, scale^2)`` at the integers in ``support``."""
    weights = np.exp(-(np.asarray(support, dtype=np.float64) ** 2) / (2 * scale**2))
    return weights / _normaliser(scale)


def variance(scale: float) -> float:
    """The exact variance of ``N_Z(0, scale^2)`` (a sum over the integers, truncated where terms vanish)."""
    if scale == 0:
        return 0.0
    k = np.arange(1, int(40 * scale) + 40, dtype=np.float64)
    return float(2 * np.sum(k**2 * np.exp(-(k**2) / (2 * scale**2))) / _normaliser(scale))


def _normaliser(scale: float) -> float:
    k = np.arange(1, int(40 * scale) + 40, dtype=np.float64)
    return float(1 + 2 * np.sum(np.exp(-(k**2) / (2 * scale**2))))
