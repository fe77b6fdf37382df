"""Calibration: the smallest noise multiplier that meets a target (epsilon, delta), and delta sanity.

:func:`calibrate_noise_multiplier` searches ``z`` for ``T`` Gaussian steps under a sampling scheme:
Poisson at rate ``q`` or fixed-size ``m`` of ``N`` (conventions in ``fedmodel.privacy.accounting``). It
never overshoots: the returned ``z`` was evaluated with the same accountant
:func:`fedmodel.privacy.accounting.epsilon` uses and its epsilon is ``<= target_epsilon`` exactly; and
it is tight: the search brackets the answer to a relative ``tolerance`` (the tests check that
``0.99 * z`` exceeds the target).

The RDP search runs in two phases to stay fast (a full per-step RDP vector at ``q = 0.5`` and large
``z`` costs about a second in dp-accounting, dominated by fractional orders below 2; the fixed-size
bound at orders 128 and 256 costs about 0.2 s):

1. bisect with only (cheap) integer orders; epsilon from a subset of orders is >= epsilon from all
   orders, so the phase-1 answer is feasible;
2. bisect again with the integer orders plus the fractional ones within 0.25 of the optimal order,
   starting from the phase-1 answer, re-centring that subset until the optimal order stays inside it;
   still a subset, so still feasible, and as tight as the full set when the optimum lies inside;

then check the answer once with all orders.

The PLD search first bisects on a 10x coarser grid (pessimistic too, so a looser upper bound, and ten
times faster to build), then predicts the full-resolution answer from one full evaluation and the
coarse slope, and brackets it from there (galloping down or up if the prediction misses), so usually
three full-resolution evaluations run.

Recommended delta (e.g. Ponomareva et al. 2023, "How to DP-fy ML", https://arxiv.org/abs/2303.00654):
much smaller than ``1 / population``; :func:`warn_delta` flags ``delta >= 1 / population``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import dp_accounting
import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import PLD_DISCRETIZATION, RDP_ORDERS, AccountantName, Sampling

#: Calibration gives up (ConfigError) when even this noise multiplier misses the target.
MAX_NOISE_MULTIPLIER = 1e3
_INTEGER_ORDERS: tuple[float, ...] = tuple(a for a in RDP_ORDERS if a.is_integer())
#: Integer orders whose fixed-size RDP is cheap (dp-accounting's exact sum is quadratic in the order up to 256).
_CHEAP_FIXED_SIZE_ORDERS: tuple[float, ...] = tuple(a for a in _INTEGER_ORDERS if a not in (128.0, 256.0))
_COARSE_PLD = 10 * PLD_DISCRETIZATION

PerStep = Callable[[float, Sequence[float]], np.ndarray]  # (z, orders) -> RDP of one step


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float | None = None,
    steps: int,
    accountant: AccountantName = "rdp",
    tolerance: float = 1e-3,
    sampling: Sampling | None = None,
) -> float:
    """Smallest noise multiplier (to a relative ``tolerance``) whose epsilon is <= ``target_epsilon``.

    Parameters
    ----------
    target_epsilon : float
        Epsilon budget, > 0.
    delta : float
        Target delta, in (0, 1); choose it well below ``1 / population``.
    sampling_rate : float, optional
        Poisson sampling rate ``q`` in (0, 1]. Give this or ``sampling``.
    steps : int
        Noisy steps (central) or rounds (federated), >= 1.
    accountant : {"rdp", "pld"}
        Accountant whose epsilon must meet the target (fixed-size sampling: "rdp" only).
    tolerance : float
        Relative width of the final bracket, in (0, 0.1). The result ``z`` satisfies
        ``epsilon(z) <= target_epsilon``; ``z / (1 + tolerance)`` failed the target in the search
        (for RDP, with the orders searched, a subset of the default orders).
    sampling : PoissonSampling or FixedSizeSampling, optional
        How each step's units are drawn (see ``fedmodel.privacy.accounting``); ``z`` is the
        mechanism's noise multiplier (noise std / clip norm), whatever the sampling.

    Returns
    -------
    float
        The noise multiplier ``z`` (noise std divided by the clip norm).

    Raises
    ------
    ConfigError
        Bad input, or no ``z <= MAX_NOISE_MULTIPLIER`` meets the target.
    AccountingError
        ``accountant`` does not support ``sampling`` (PLD and fixed-size sampling).
    """
    target = _check_target(target_epsilon)
    d = accounting.check_delta(delta)
    how = _check_sampling(sampling_rate, sampling)
    if accounting.check_steps(steps) < 1:
        raise ConfigError(f"steps must be >= 1 to calibrate noise, got {steps!r}")
    name = accounting.check_accountant(accountant)
    if not isinstance(tolerance, int | float) or not 0 < tolerance < 0.1:
        raise ConfigError(f"tolerance must be in (0, 0.1), got {tolerance!r}")
    if name not in accounting.accountants_for(accounting.sampled_event(dp_accounting.GaussianDpEvent(1.0), how)):
        raise accounting.AccountingError(
            f"{name} does not support fixed-size sampling; use rdp (calibrating for {_describe(how)})"
        )

    def event(z: float) -> dp_accounting.DpEvent:
        return accounting.steps_event(dp_accounting.GaussianDpEvent(z), how, steps=steps)

    def full(z: float) -> float:
        try:
            return accounting.epsilon(event(z), delta=d, accountant=name)
        except accounting.AccountingError:  # fail closed: a z the accountant cannot evaluate does not qualify
            return math.inf

    def coarse_pld(z: float) -> float:
        try:
            return accounting.pld_epsilon(event(z), delta=d, value_discretization_interval=_COARSE_PLD)
        except accounting.AccountingError:
            return math.inf

    per_step, cheap = _per_step(how)
    if name == "rdp":
        z = _calibrate_rdp(target, d, per_step, cheap, steps, tolerance)
    else:
        guess = _calibrate_rdp(target, d, per_step, cheap, steps, 0.05) or 1.0
        start = _bisect(coarse_pld, target, guess=guess, tolerance=max(tolerance, 0.01), step=1.25) or guess
        z = _bisect(full, target, **_predict(full, coarse_pld, target, start, tolerance), gallop=True)
    if z is None:
        raise _infeasible(target, d, how, steps, name, full(MAX_NOISE_MULTIPLIER))
    while full(z) > target:  # cannot happen (the search only returns tested values); fail closed anyway
        z *= 1 + tolerance
        if z > MAX_NOISE_MULTIPLIER:
            raise _infeasible(target, d, how, steps, name, full(MAX_NOISE_MULTIPLIER))
    return z


def _predict(
    full: Callable[[float], float], coarse: Callable[[float], float], target: float, z: float, tolerance: float
) -> dict[str, float]:
    """Where to start the full-resolution search: ``guess`` and ``step`` for :func:`_bisect`.

    Locally ``eps(z') = eps(z) * (z' / z)^k``, with the slope ``k`` from the coarse grid (cheap) and
    ``eps(z)`` from the full one; the bracket ``[pred / sqrt(1 + tol), pred * sqrt(1 + tol)]`` around the
    predicted root then usually settles the search in two more full evaluations.
    """
    at, coarse_at = full(z), coarse(z)
    nearby = coarse(z * 1.01)
    tolerance_step = {"guess": z, "step": 1 + 2 * tolerance, "tolerance": tolerance}
    if not all(math.isfinite(v) and v > 0 for v in (at, coarse_at, nearby)) or nearby >= coarse_at:
        return tolerance_step
    k = math.log(nearby / coarse_at) / math.log(1.01)  # < 0: epsilon falls as z grows
    pred = z * (target / at) ** (1 / k)
    return {"guess": pred * math.sqrt(1 + tolerance), "step": 1 + tolerance, "tolerance": tolerance}


def _check_sampling(sampling_rate: float | None, sampling: Sampling | None) -> Sampling:
    if (sampling_rate is None) == (sampling is None):
        raise ConfigError(
            "give exactly one of sampling_rate and sampling, got "
            f"sampling_rate={sampling_rate!r}, sampling={sampling!r}"
        )
    if sampling is not None:
        return accounting.check_sampling(sampling)
    return accounting.PoissonSampling(accounting.check_sampling_rate(sampling_rate))  # type: ignore[arg-type]


def _per_step(how: Sampling) -> tuple[PerStep, tuple[float, ...]]:
    """The per-step RDP of ``how`` as a function of ``(z, orders)``, and the cheap orders for phase 1."""
    if isinstance(how, accounting.FixedSizeSampling):
        n, m = how.population, how.size

        def fixed(z: float, orders: Sequence[float]) -> np.ndarray:
            return accounting.per_step_rdp_fixed_size(noise_multiplier=z, population=n, size=m, orders=orders)

        return fixed, _CHEAP_FIXED_SIZE_ORDERS
    q = how.rate

    def poisson(z: float, orders: Sequence[float]) -> np.ndarray:
        return accounting.per_step_rdp(noise_multiplier=z, sampling_rate=q, orders=orders)

    return poisson, _INTEGER_ORDERS


def _describe(how: Sampling) -> str:
    if isinstance(how, accounting.FixedSizeSampling):
        return f"fixed-size sampling of {how.size} of {how.population}"
    return f"Poisson sampling at q={how.rate:g}"


def _calibrate_rdp(
    target: float, delta: float, per_step: PerStep, cheap: tuple[float, ...], steps: int, tolerance: float
) -> float | None:
    def eps_at(orders: Sequence[float]) -> Callable[[float], float]:
        def f(z: float) -> float:
            try:
                return accounting.rdp_epsilon(steps * per_step(z, orders), delta=delta, orders=orders)
            except accounting.AccountingError:  # fail closed
                return math.inf

        return f

    coarse = _bisect(eps_at(cheap), target, guess=1.0, tolerance=tolerance)
    if coarse is None:  # only fractional orders could help: search with all of them
        return _bisect(eps_at(RDP_ORDERS), target, guess=MAX_NOISE_MULTIPLIER, tolerance=tolerance)
    z = coarse
    optimal = _optimal_order_finder(per_step, steps, delta)
    for _ in range(5):  # the optimal order moves as z falls: re-centre the subset until it stays inside
        nearest = _orders_around(z, optimal)
        refined = _bisect(eps_at(nearest), target, guess=z, tolerance=tolerance, step=1.05)
        if refined is None:  # cannot happen (nearest holds phase 1's optimal order); keep the feasible z
            break
        z = refined
        if _orders_around(z, optimal) == nearest:
            break
    return z


def _optimal_order_finder(per_step: PerStep, steps: int, delta: float) -> Callable[[float, tuple[float, ...]], float]:
    def optimal(z: float, orders: tuple[float, ...]) -> float:
        from dp_accounting.rdp import rdp_privacy_accountant

        vec = steps * per_step(z, orders)
        try:
            _, order = rdp_privacy_accountant.compute_epsilon(list(orders), list(vec), delta)
        except ValueError as err:  # e.g. a negative RDP value from round-off inside dp-accounting
            raise accounting.AccountingError(
                f"the rdp accountant failed at noise multiplier {z:g}: {' '.join(str(err).split())}; "
                "try a target epsilon or delta further from the extremes"
            ) from err
        return float(order)

    return optimal


def _orders_around(z: float, optimal: Callable[[float, tuple[float, ...]], float]) -> tuple[float, ...]:
    """The default orders within 0.25 of the optimal order at ``z`` (plus its integer neighbours)."""
    best_int = optimal(z, _INTEGER_ORDERS)
    below = [a for a in _INTEGER_ORDERS if a < best_int]
    above = [a for a in _INTEGER_ORDERS if a > best_int]
    low, high = (below[-1] if below else 1.0), (above[0] if above else math.inf)
    near = tuple(a for a in RDP_ORDERS if low <= a <= high)
    best = optimal(z, near)
    return tuple(a for a in near if abs(a - best) <= 0.25 or a.is_integer())


def _bisect(
    eps: Callable[[float], float],
    target: float,
    *,
    guess: float,
    tolerance: float,
    step: float = 2.0,
    gallop: bool = False,
) -> float | None:
    """Smallest tested z (to relative tolerance) with eps(z) <= target, for eps decreasing in z.

    The bracket is found by stepping down from ``guess`` by factors of ``step`` (or up by 2); with
    ``gallop`` the factor starts at ``step`` and squares after each step, both ways. None when even
    ``MAX_NOISE_MULTIPLIER`` misses the target.
    """
    hi = min(guess, MAX_NOISE_MULTIPLIER)
    ratio = step
    if eps(hi) <= target:
        lo = hi / ratio
        while eps(lo) <= target:
            hi = lo
            ratio = ratio**2 if gallop else ratio
            lo = hi / ratio
            if hi < 1e-6:  # every z works (a target so large that even no noise nearly meets it)
                return hi
    else:
        while True:
            if hi >= MAX_NOISE_MULTIPLIER:
                return None
            lo, hi = hi, min(hi * ratio if gallop else 2 * hi, MAX_NOISE_MULTIPLIER)
            ratio = ratio**2 if gallop else ratio
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


def _infeasible(target: float, delta: float, how: Sampling, steps: int, name: str, best: float) -> ConfigError:
    return ConfigError(
        f"target_epsilon={target:g} is out of reach: even noise_multiplier={MAX_NOISE_MULTIPLIER:g} gives "
        f"epsilon={best:.4g} ({name}, delta={delta:g}, {_describe(how)}, steps={steps}); "
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
