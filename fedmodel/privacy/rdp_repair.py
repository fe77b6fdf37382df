"""Repair of dp-accounting's RDP of a Poisson-subsampled Gaussian where round-off breaks it (tiny ``q``, large ``z``).

dp-accounting's per-step RDP loses its accuracy for tiny sampling rates with large noise multipliers:
its sums cancel down to about 1e-16, to 0, or below 0. :func:`checked_poisson_rdp` checks each order:

- an integer order against a cancellation-free recomputation (:func:`log_a_int`), the binomial sum of
  Mironov, Talwar & Zhang 2019 (https://arxiv.org/abs/1908.10530, Sec. 3.3) rewritten around 1,
  ``A_a - 1 = sum_{i>=2} C(a, i) q^i (1-q)^(a-i) expm1((i^2 - i) / (2 z^2))``, every term >= 0; the
  recomputed value replaces it when they differ by more than :data:`RDP_TOLERANCE` relative;
- a fractional order is kept when it lies within the bounds that log-convexity of ``A_a`` in ``a``
  gives and ``log A_a >= 1e-7``; otherwise it is replaced by the upper bound, the chord between the
  neighbouring integer orders (as Wang et al. 2019, Cor. 10, interpolate).

So every value is dp-accounting's (exactly, in ordinary regimes) or an upper bound. Used by
:func:`fedmodel.privacy.accounting.per_step_rdp`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

#: Relative tolerance within which dp-accounting's RDP of a Poisson-subsampled Gaussian is accepted
#: against the cancellation-free recomputation (see :func:`fedmodel.privacy.accounting.per_step_rdp`).
RDP_TOLERANCE = 1e-9

#: dp-accounting's RDP at a fractional order is kept only where ``log A_a`` is at least this: its sums
#: then lose at most about 1e-6 relative to round-off (measured against 60-digit mpmath quadrature).
_FRACTIONAL_FLOOR = 1e-7


def checked_poisson_rdp(values: np.ndarray, z: float, q: float, orders: tuple[float, ...]) -> np.ndarray:
    """dp-accounting's per-step RDP, each order checked and, where it fails, replaced (see the module docstring)."""
    log_a = functools.cache(lambda a: log_a_int(q, z, a))  # log A_a at integer a (log A_1 = 0)
    out = np.array(values, dtype=np.float64)
    for k, (a, v) in enumerate(zip(orders, values, strict=True)):
        if a.is_integer():
            exact = log_a(int(a)) / (a - 1)
            if not (v == exact or abs(v - exact) <= RDP_TOLERANCE * abs(exact)):
                out[k] = exact
            continue
        lo, t = math.floor(a), a - math.floor(a)
        upper = ((1 - t) * log_a(lo) + t * log_a(lo + 1)) / (a - 1)  # chord of a convex function
        lower = 0.0  # the chord over [lo - 1, lo], extended beyond lo, lies below a convex function
        if lo > 1:
            lower = (log_a(lo) + t * (log_a(lo) - log_a(lo - 1))) / (a - 1)
        trusted = (a - 1) * v >= _FRACTIONAL_FLOOR and lower * (1 - RDP_TOLERANCE) <= v <= upper * (1 + RDP_TOLERANCE)
        if not trusted:
            out[k] = upper
    if np.array_equal(out, values):
        return out
    # RDP grows with the order, so a bound at a higher order bounds every lower one: keep the smallest
    by_order = np.argsort(orders)
    out[by_order] = np.minimum.accumulate(out[by_order][::-1])[::-1]
    return out


def log_a_int(q: float, z: float, alpha: int) -> float:
    """``log A_alpha`` of the Poisson-subsampled Gaussian at integer ``alpha >= 1``, without cancellation."""
    if alpha <= 1:
        return 0.0
    i = np.arange(2, alpha + 1, dtype=np.float64)
    x = (i * i - i) / (2 * z * z)
    log_expm1 = x + np.log(-np.expm1(-x))  # log(exp(x) - 1), stable for small and large x
    log_terms = (
        special.gammaln(alpha + 1)
        - special.gammaln(i + 1)
        - special.gammaln(alpha - i + 1)
        + i * math.log(q)
        + (alpha - i) * math.log1p(-q)
        + log_expm1
    )
    log_a_minus_1 = float(special.logsumexp(log_terms))
    return float(np.logaddexp(0.0, log_a_minus_1))  # log(1 + (A - 1))
