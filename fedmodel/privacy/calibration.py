"""Calibration: the smallest noise multiplier that meets a target (epsilon, delta), and delta sanity.

:func:`calibrate_noise_multiplier` searches ``z`` for ``T`` Poisson-subsampled Gaussian steps at rate
``q`` (conventions in ``fedmodel.privacy.accounting``). It never overshoots: the returned ``z`` was
evaluated with the same accountant :func:`fedmodel.privacy.accounting.epsilon` uses and its epsilon is
``<= target_epsilon`` exactly; and it is tight: the search brackets the answer to a relative
``tolerance`` (the tests check that ``0.99 * z`` exceeds the target).

The RDP search runs in two phases to stay fast (a full per-step RDP vector at ``q = 0.5`` and large
``z`` costs about a second in dp-accounting, dominated by fractional orders below 2):

1. bisect with only the integer orders (cheap); epsilon from a subset of orders is >= epsilon from all
   orders, so the phase-1 answer is feasible;
2. bisect again with the integer orders plus the fractional ones within 0.25 of the optimal order,
   starting from the phase-1 answer, re-centring that subset until the optimal order stays inside it;
   still a subset, so still feasible, and as tight as the full set when the optimum lies inside;

then check the answer once with all orders.

Recommended delta (e.g. Ponomareva et al. 2023, "How to DP-fy ML", https://arxiv.org/abs/2303.00654):
much smaller than ``1 / population``; :func:`warn_delta` flags ``delta >= 1 / population``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import RDP_ORDERS, AccountantName

#: Calibration gives up (ConfigError) when even this noise multiplier misses the target.
MAX_NOISE_MULTIPLIER = 1e3
_INTEGER_ORDERS: tuple[float, ...] = tuple(a for a in RDP_ORDERS if a.is_integer())


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: AccountantName = "rdp",
    tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier (to a relative ``tolerance``) whose epsilon is <= ``target_epsilon``.

    Parameters
    ----------
    target_epsilon : float
        Epsilon budget, > 0.
    delta : float
        Target delta, in (0, 1); choose it well below ``1 / population``.
    sampling_rate : float
        Poisson sampling rate ``q`` in (0, 1].
    steps : int
        Noisy steps (central) or rounds (federated), >= 1.
    accountant : {"rdp", "pld"}
        Accountant whose epsilon must meet the target.
    tolerance : float
        Relative width of the final bracket, in (0, 0.1). The result ``z`` satisfies
        ``epsilon(z) <= target_epsilon``; ``z / (1 + tolerance)`` failed the target in the search
        (for RDP, with the orders searched, a subset of the default orders).

    Returns
    -------
    float
        The noise multiplier ``z`` (noise std divided by the clip norm).

    Raises
    ------
    ConfigError
        Bad input, or no ``z <= MAX_NOISE_MULTIPLIER`` meets the target.
    """
    target = _check_target(target_epsilon)
    d = accounting.check_delta(delta)
    q = accounting.check_sampling_rate(sampling_rate)
    if accounting.check_steps(steps) < 1:
        raise ConfigError(f"steps must be >= 1 to calibrate noise, got {steps!r}")
    name = accounting.check_accountant(accountant)
    if not isinstance(tolerance, int | float) or not 0 < tolerance < 0.1:
        raise ConfigError(f"tolerance must be in (0, 0.1), got {tolerance!r}")

    def full(z: float) -> float:
        event = accounting.dp_event(noise_multiplier=z, sampling_rate=q, steps=steps)
        try:
            return accounting.epsilon(event, delta=d, accountant=name)
        except accounting.AccountingError:  # fail closed: a z the accountant cannot evaluate does not qualify
            return math.inf

    z = (
        _calibrate_rdp(target, d, q, steps, tolerance)
        if name == "rdp"
        else _bisect(
            full,
            target,
            guess=_calibrate_rdp(target, d, q, steps, 0.05) or 1.0,
            tolerance=tolerance,
            step=1.25,
        )
    )
    if z is None:
        raise _infeasible(target, d, q, steps, name, full(MAX_NOISE_MULTIPLIER))
    while full(z) > target:  # cannot happen (the search only returns tested values); fail closed anyway
        z *= 1 + tolerance
        if z > MAX_NOISE_MULTIPLIER:
            raise _infeasible(target, d, q, steps, name, full(MAX_NOISE_MULTIPLIER))
    return z


def _calibrate_rdp(target: float, delta: float, q: float, steps: int, tolerance: float) -> float | None:
    def eps_at(orders: Sequence[float]) -> Callable[[float], float]:
        def f(z: float) -> float:
            vec = steps * accounting.per_step_rdp(noise_multiplier=z, sampling_rate=q, orders=orders)
            return accounting.rdp_epsilon(vec, delta=delta, orders=orders)

        return f

    coarse = _bisect(eps_at(_INTEGER_ORDERS), target, guess=1.0, tolerance=tolerance)
    if coarse is None:  # only fractional orders could help: search with all of them
        return _bisect(eps_at(RDP_ORDERS), target, guess=MAX_NOISE_MULTIPLIER, tolerance=tolerance)
    z = coarse
    for _ in range(5):  # the optimal order moves as z falls: re-centre the subset until it stays inside
        nearest = _orders_around(z, q, steps, delta)
        refined = _bisect(eps_at(nearest), target, guess=z, tolerance=tolerance, step=1.05)
        if refined is None:  # cannot happen (nearest holds phase 1's optimal order); keep the feasible z
            break
        z = refined
        if _orders_around(z, q, steps, delta) == nearest:
            break
    return z


def _orders_around(z: float, q: float, steps: int, delta: float) -> tuple[float, ...]:
    """The default orders within 0.25 of the optimal order at ``z`` (plus its integer neighbours)."""
    best_int = _optimal_order(z, q, steps, delta, _INTEGER_ORDERS)
    below = [a for a in _INTEGER_ORDERS if a < best_int]
    above = [a for a in _INTEGER_ORDERS if a > best_int]
    low, high = (below[-1] if below else 1.0), (above[0] if above else math.inf)
    near = tuple(a for a in RDP_ORDERS if low <= a <= high)
    best = _optimal_order(z, q, steps, delta, near)
    return tuple(a for a in near if abs(a - best) <= 0.25 or a.is_integer())


def _optimal_order(z: float, q: float, steps: int, delta: float, orders: tuple[float, ...]) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    vec = steps * accounting.per_step_rdp(noise_multiplier=z, sampling_rate=q, orders=orders)
    _, order = rdp_privacy_accountant.compute_epsilon(list(orders), list(vec), delta)
    return float(order)


def _bisect(
    eps: Callable[[float], float], target: float, *, guess: float, tolerance: float, step: float = 2.0
) -> float | None:
    """Smallest tested z (to relative tolerance) with eps(z) <= target, for eps decreasing in z.

    The bracket is found by stepping down from ``guess`` by factors of ``step`` (or up by 2). None when
    even ``MAX_NOISE_MULTIPLIER`` misses the target.
    """
    hi = min(guess, MAX_NOISE_MULTIPLIER)
    if eps(hi) <= target:
        lo = hi / step
        while eps(lo) <= target:
            hi, lo = lo, lo / step
            if hi < 1e-6:  # every z works (a target so large that even no noise nearly meets it)
                return hi
    else:
        while True:
            if hi >= MAX_NOISE_MULTIPLIER:
                return None
            lo, hi = hi, min(2 * hi, MAX_NOISE_MULTIPLIER)
            if eps(hi) <= target:
                break
    while hi > lo * (1 + tolerance):  # invariant: eps(lo) > target >= eps(hi)
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= target else (mid, hi)
    return hi


def _check_target(target_epsilon: float) -> float:
    if (
        isinstance(target_epsilon, bool)
        or not isinstance(target_epsilon, int | float)
        or not 0 < target_epsilon < math.inf
    ):
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    return float(target_epsilon)


def _infeasible(target: float, delta: float, q: float, steps: int, name: str, best: float) -> ConfigError:
    return ConfigError(
        f"target_epsilon={target:g} is out of reach: even noise_multiplier={MAX_NOISE_MULTIPLIER:g} gives "
        f"epsilon={best:.4g} ({name}, delta={delta:g}, q={q:g}, steps={steps}); "
        "raise target_epsilon or delta, or lower steps or the sampling rate"
    )


def warn_delta(delta: float, population: int, *, unit: str = "example") -> str | None:
    """A warning when ``delta >= 1 / population``, else None.

    Such a delta allows a mechanism that publishes a whole random record outright, so it gives no
    meaningful guarantee; ``delta`` should be much smaller than ``1 / population``.
    """
    d = accounting.check_delta(delta)
    n = accounting.check_steps(population, name="population")
    if n < 1:
        raise ConfigError(f"population must be >= 1, got {population!r}")
    if d >= 1 / n:
        return (
            f"delta={d:g} is >= 1/{n} (1 / number of {unit}s): a mechanism that publishes one random {unit} "
            f"outright meets it; choose delta well below {1 / n:.3g}, e.g. {_suggest(n):.0e}"
        )
    return None


def _suggest(n: int) -> float:
    """A power of ten below ``1 / n**1.1`` (a common rule of thumb)."""
    return 10.0 ** math.floor(math.log10(1 / n**1.1))
