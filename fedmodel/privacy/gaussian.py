"""Closed-form epsilon of the Gaussian mechanism (Balle & Wang 2018, https://arxiv.org/abs/1805.06530, Thm. 8).

Events made only of un-subsampled Gaussian mechanisms compose to one Gaussian mechanism, so the
``"pld"`` accountant answers them exactly with :func:`gaussian_epsilon`, without discretisation.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math

from scipy import special


def gaussian_epsilon(s: float, delta: float) -> float:
    """Exact epsilon at ``delta`` of one Gaussian mechanism with noise std / sensitivity ``s``.

    The privacy profile of the Gaussian mechanism with ``s`` = std / sensitivity is
    ``delta(eps) = Phi(-eps s + 1/(2 s)) - exp(eps) Phi(-eps s - 1/(2 s))`` (Balle & Wang 2018,
    "Improving the Gaussian mechanism", https://arxiv.org/abs/1805.06530, Thm. 8), decreasing in
    ``eps``. The answer is the smallest ``eps >= 0`` with ``delta(eps) <= delta``, found by bisection in
    float64 (log-space with ``scipy.special.log_ndtr``) and returned from the side where the condition
    holds as computed. ``T`` Gaussian steps with multiplier ``z`` are one with ``z / sqrt(T)``.

    ``s`` must be a finite float >= 0 and ``delta`` a float in (0, 1), as
    :func:`fedmodel.privacy.accounting.gaussian_epsilon` checks before calling this.
    """
    log_target = math.log(delta)
    if s == 0:
        return math.inf

    def excess(eps: float) -> float:  # log delta(eps) - log delta: > 0 where eps is too small
        la = float(special.log_ndtr(-eps * s + 0.5 / s))
        lb = float(special.log_ndtr(-eps * s - 0.5 / s))
        ratio = eps + lb - la  # log of exp(eps) Phi(b) / Phi(a), < 0
        if ratio >= 0:  # round-off at a huge eps: delta(eps) is 0 to float precision
            return -math.inf
        return la + math.log(-math.expm1(ratio)) - log_target

    if excess(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0:
        lo, hi = hi, 2 * hi
        if hi > 1e300:  # no finite epsilon to report: infinity is the (trivially valid) answer
            return math.inf
    for _ in range(200):  # invariant: excess(lo) > 0 >= excess(hi)
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi) or hi - lo <= 1e-13 * hi:
            break
        lo, hi = (lo, mid) if excess(mid) <= 0 else (mid, hi)
    return hi
