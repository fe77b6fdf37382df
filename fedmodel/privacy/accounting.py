"""Privacy accounting: describe what ran as a dp-accounting ``DpEvent``, turn it into epsilon.

Vocabulary and conventions (also in ``docs/privacy.md``):

- **Unit of privacy.** Central DP-SGD protects one *example*; federated DP-FedAvg protects one
  *client*, all of its data at once.
- **Step.** One noisy release: a DP-SGD step (central) or one noised aggregate of client updates
  (federated, one round). Each step is a Gaussian mechanism on a sum of records clipped to L2 norm C,
  with noise standard deviation ``z * C``; ``z`` is the *noise multiplier*. The mechanism describes one
  release as ``GaussianDpEvent(z)`` (add-or-remove-one adjacency, sensitivity C).
- **Sampling** of one step (:data:`Sampling`):

  * :class:`PoissonSampling` with rate ``q``: each example (client) takes part independently with
    probability ``q``; central ``q = batch_size / num_examples``, federated
    ``q = clients_per_round / clients``. Accounted as a Poisson-subsampled Gaussian under
    add-or-remove-one adjacency (Abadi et al. 2016, https://arxiv.org/abs/1607.00133; McMahan et al.
    2018, https://arxiv.org/abs/1710.06963). ``q = 1`` is plain composition of Gaussian mechanisms.
  * :class:`FixedSizeSampling` of ``m`` out of ``N``: exactly ``m`` units per step, uniformly without
    replacement. Accounted under replace-one adjacency, where the sum's L2 sensitivity is ``2C``, so the
    accountant sees ``GaussianDpEvent(z / 2)``, with the RDP bound for sampling without replacement of
    Wang, Balle & Kasiviswanathan 2019 (https://arxiv.org/abs/1808.00087, Thm. 27). Only ``"rdp"``
    supports it (dp-accounting 0.4.3's PLD accountant has no such event).

- **Steps** ``T``: central ``ceil(epochs * num_examples / batch_size)``; federated ``rounds``.
- **Accountants.** ``"rdp"``: Rényi DP (Mironov 2017) with dp-accounting's default orders and its
  improved RDP-to-(epsilon, delta) conversion (Canonne et al. 2020, https://arxiv.org/abs/2004.00010).
  Where dp-accounting's RDP of a Poisson-subsampled Gaussian loses its accuracy to round-off (tiny
  ``q`` and large ``z``: values that cancel to nothing, or even go negative), the integer orders are
  recomputed from a cancellation-free form and the fractional orders bounded by log-convexity, so the
  figure stays an upper bound. ``"pld"``: privacy loss distributions (Koskela et al. 2020; Doroshenko
  et al. 2022, https://arxiv.org/abs/2207.04380) with pessimistic discretisation at
  :data:`PLD_DISCRETIZATION`, dp-accounting's default, so the figure is an upper bound. Events made only
  of un-subsampled Gaussians are one Gaussian mechanism, whose epsilon has a closed form (Balle & Wang
  2018, https://arxiv.org/abs/1805.06530, Thm. 8): ``"pld"`` then answers exactly, without
  discretisation. Both are upper bounds on the true epsilon; PLD is usually the tighter one.
- **Zero noise** (``z = 0``) is not differentially private: epsilon is ``math.inf`` with both
  accountants. Zero steps give epsilon 0.
- **Failures** of an accountant (an event it does not support, a numerical failure inside
  dp-accounting) raise :class:`AccountingError`, a :class:`~fedmodel.errors.ConfigError` with a
  one-line message that says what to try.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

from fedmodel.errors import ConfigError
from fedmodel.privacy import gaussian, rdp_repair
from fedmodel.privacy.rdp_repair import RDP_TOLERANCE as RDP_TOLERANCE  # re-exported: per_step_rdp's tolerance

AccountantName = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[AccountantName, ...] = get_args(AccountantName)

#: PLD value discretisation interval (in units of privacy loss): dp-accounting's and
#: tensorflow-privacy's default; never use a coarser one for a reported figure. A coarser grid stays an
#: upper bound but a loose one: at q = 0.001, z >= 1.5 and >= 1,000 steps, 1e-3 overstates epsilon by
#: 2.6-51%. Measured on the project machine for MNIST DP-SGD (q = 256/60000, z = 1.1, 14,063 steps,
#: delta = 1e-5): 2.3818 in about 0.75 s the first time (building the one-step distribution, then
#: cached), about 0.2 s afterwards.
PLD_DISCRETIZATION = 1e-4

#: The RDP orders used (dp-accounting's defaults).
RDP_ORDERS: tuple[float, ...] = tuple(float(a) for a in rdp_privacy_accountant.DEFAULT_RDP_ORDERS)

_T = TypeVar("_T")


class AccountingError(ConfigError):
    """An accountant cannot handle an event: unsupported kind, or a numerical failure inside it."""


# -- validation -----------------------------------------------------------------------------------


def check_noise_multiplier(noise_multiplier: float) -> float:
    """Return ``noise_multiplier`` as a float, or raise ConfigError unless it is a finite number >= 0."""
    if not _is_real(noise_multiplier) or not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    return float(noise_multiplier)


def check_sampling_rate(sampling_rate: float) -> float:
    """Return ``sampling_rate`` as a float, or raise ConfigError unless it lies in (0, 1]."""
    if not _is_real(sampling_rate) or not 0 < sampling_rate <= 1:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    return float(sampling_rate)


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float, or raise ConfigError unless it lies in the open interval (0, 1)."""
    if not _is_real(delta) or not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


def check_steps(steps: int, *, name: str = "steps") -> int:
    """Return ``steps``, or raise ConfigError unless it is an integer >= 0."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {steps!r}")
    return int(steps)


def check_accountant(accountant: str) -> AccountantName:
    """Return ``accountant`` if it names a supported accountant, else raise ConfigError."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    return accountant  # type: ignore[return-value]


def check_accountants(accountants: Iterable[str]) -> tuple[AccountantName, ...]:
    """Validate a non-empty collection of accountant names; duplicates are dropped, order is kept."""
    names = tuple(dict.fromkeys(check_accountant(a) for a in accountants))
    if not names:
        raise ConfigError(f"accountants must name at least one of {', '.join(ACCOUNTANTS)}, got none")
    return names


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# -- sampling -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoissonSampling:
    """Poisson sampling: each unit takes part in a step independently with probability ``rate``.

    ``rate`` is ``q`` in (0, 1] (dimensionless); ``q = 1`` means every unit in every step.
    """

    rate: float

    def __post_init__(self) -> None:
        if not _is_real(self.rate) or not 0 < self.rate <= 1:
            raise ConfigError(f"Poisson sampling rate must be in (0, 1], got {self.rate!r}")
        object.__setattr__(self, "rate", float(self.rate))


@dataclass(frozen=True)
class FixedSizeSampling:
    """Fixed-size sampling: exactly ``size`` of ``population`` units per step, uniformly without replacement.

    ``population`` is ``N`` (>= 1) and ``size`` is ``m``, with ``1 <= m <= N``.
    """

    population: int
    size: int

    def __post_init__(self) -> None:
        for name in ("population", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"fixed-size sampling {name} must be an integer >= 1, got {value!r}")
        if self.size > self.population:
            raise ConfigError(
                f"fixed-size sampling size must be <= population, got size={self.size} > population={self.population}"
            )
        object.__setattr__(self, "population", int(self.population))
        object.__setattr__(self, "size", int(self.size))

    @property
    def rate(self) -> float:
        """The fraction ``m / N`` of units in each step."""
        return self.size / self.population


@dataclass(frozen=True)
class TreeAggregation:
    """DP-FTRL's participation (Kairouz et al. 2021): no sampling; each unit takes part at most once per tree.

    ``tree`` numbers the tree (from 0; a new one at every restart) that a release belongs to. The releases of
    one tree are accounted together as ``SingleEpochTreeAggregationDpEvent(z, steps)``: a unit's one
    contribution reaches ``ceil(log2(steps + 1))`` noisy nodes. Trees compose. The neighbouring relation is
    dp-accounting's ``REPLACE_SPECIAL`` (one unit's data replaced by a contribution of zero).
    """

    tree: int

    def __post_init__(self) -> None:
        if isinstance(self.tree, bool) or not isinstance(self.tree, numbers.Integral) or self.tree < 0:
            raise ConfigError(f"tree must be an integer >= 0, got {self.tree!r}")
        object.__setattr__(self, "tree", int(self.tree))

    @property
    def rate(self) -> float:
        """Every available unit may take part (once per tree): no sampling rate applies."""
        return 1.0


Sampling = PoissonSampling | FixedSizeSampling | TreeAggregation


def check_sampling(sampling: object) -> Sampling:
    """Return ``sampling`` if it is a :class:`PoissonSampling`, :class:`FixedSizeSampling` or
    :class:`TreeAggregation`, else raise."""
    if not isinstance(sampling, PoissonSampling | FixedSizeSampling | TreeAggregation):
        raise ConfigError(f"sampling must be PoissonSampling, FixedSizeSampling or TreeAggregation, got {sampling!r}")
    return sampling


def sampled_event(mechanism_event: dp_accounting.GaussianDpEvent, sampling: Sampling) -> dp_accounting.DpEvent:
    """The DpEvent of one release of ``mechanism_event`` on units drawn by ``sampling``.

    Parameters
    ----------
    mechanism_event : dp_accounting.GaussianDpEvent
        What the mechanism returned: ``GaussianDpEvent(z)``, ``z`` = noise std / clip norm, under
        add-or-remove-one adjacency (sensitivity = clip norm).
    sampling : PoissonSampling or FixedSizeSampling

    Returns
    -------
    dp_accounting.DpEvent
        Poisson: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, or the Gaussian itself when
        ``q == 1``. Fixed-size: ``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))``, for
        replace-one adjacency, under which the sum's sensitivity is twice the clip norm.
    """
    if not isinstance(mechanism_event, dp_accounting.GaussianDpEvent):
        raise ConfigError(f"mechanism_event must be a dp_accounting.GaussianDpEvent, got {mechanism_event!r}")
    z = check_noise_multiplier(mechanism_event.noise_multiplier)
    how = check_sampling(sampling)
    if isinstance(how, TreeAggregation):
        return dp_accounting.SingleEpochTreeAggregationDpEvent(noise_multiplier=z, step_counts=1)
    if isinstance(how, FixedSizeSampling):
        return dp_accounting.SampledWithoutReplacementDpEvent(
            source_dataset_size=how.population,
            sample_size=how.size,
            event=dp_accounting.GaussianDpEvent(noise_multiplier=z / 2),
        )
    return _step_event(z, how.rate)


def accountants_for(event: dp_accounting.DpEvent) -> tuple[AccountantName, ...]:
    """The accountants that can evaluate ``event``: only ``("rdp",)`` once it holds fixed-size sampling or trees."""
    rdp_only = _has_event(event, dp_accounting.SampledWithoutReplacementDpEvent) or _has_event(
        event, dp_accounting.SingleEpochTreeAggregationDpEvent
    )
    return ("rdp",) if rdp_only else ACCOUNTANTS


def _has_event(event: dp_accounting.DpEvent, kind: type) -> bool:
    if isinstance(event, kind):
        return True
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _has_event(event.event, kind)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return any(_has_event(e, kind) for e in event.events)
    return False


# -- events ---------------------------------------------------------------------------------------


def dp_event(*, noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """The DpEvent of ``steps`` Poisson-subsampled Gaussian mechanisms.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the L2 clip norm (``z``), >= 0.
    sampling_rate : float
        Poisson sampling probability ``q`` of one example (central) or client (federated), in (0, 1].
    steps : int
        Number of noisy steps (central) or rounds (federated), >= 0.

    Returns
    -------
    dp_accounting.DpEvent
        ``SelfComposed(PoissonSampled(Gaussian(z), q), steps)``; for ``q == 1`` plain
        ``SelfComposed(Gaussian(z), steps)``; for ``steps == 0`` a ``NoOpDpEvent``.
    """
    z = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    return steps_event(dp_accounting.GaussianDpEvent(z), PoissonSampling(q), steps=steps)


def steps_event(
    mechanism_event: dp_accounting.GaussianDpEvent, sampling: Sampling, *, steps: int
) -> dp_accounting.DpEvent:
    """``steps`` releases of ``mechanism_event`` under ``sampling`` (see :func:`sampled_event`)."""
    one = sampled_event(mechanism_event, sampling)
    count = check_steps(steps)
    if count == 0:
        return dp_accounting.NoOpDpEvent()
    if isinstance(one, dp_accounting.SingleEpochTreeAggregationDpEvent):  # one tree's steps share its nodes
        return dp_accounting.SingleEpochTreeAggregationDpEvent(noise_multiplier=one.noise_multiplier, step_counts=count)
    return dp_accounting.SelfComposedDpEvent(event=one, count=count)


def _step_event(z: float, q: float) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier=z)
    if q == 1.0:
        return gaussian
    return dp_accounting.PoissonSampledDpEvent(sampling_probability=q, event=gaussian)


# -- epsilon --------------------------------------------------------------------------------------


def epsilon(event: dp_accounting.DpEvent, *, delta: float, accountant: AccountantName) -> float:
    """Epsilon of ``event`` at ``delta`` with a fresh accountant.

    Parameters
    ----------
    event : dp_accounting.DpEvent
        What ran, e.g. from :func:`dp_event` or ``PrivacyLedger.dp_event()``.
    delta : float
        Target delta, in (0, 1).
    accountant : {"rdp", "pld"}
        ``"rdp"`` gives what ``dp_accounting.rdp.RdpAccountant()`` gives after composing ``event``
        (with replace-one adjacency when it holds fixed-size sampling), except where that loses its
        accuracy to round-off (see the module docstring). ``"pld"`` gives what
        ``PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)`` gives (to float rounding),
        except for events of un-subsampled Gaussians only, answered exactly by
        :func:`gaussian_epsilon`. Both cache the per-step quantity of each ``(z, q)`` (RDP vector,
        one-step privacy loss distribution), so curves, searches and ledgers cost little per query.

    Returns
    -------
    float
        Epsilon, ``math.inf`` if any step had zero noise.

    Raises
    ------
    AccountingError
        The accountant does not support ``event`` (``"pld"`` and fixed-size sampling) or failed on it.
    """
    d = check_delta(delta)
    name = check_accountant(accountant)
    if name == "rdp":
        return _guarded("rdp", event, lambda: rdp_epsilon(rdp_vector(event), delta=d))
    return pld_epsilon(event, delta=d)


def epsilons(
    event: dp_accounting.DpEvent, *, delta: float, accountants: Sequence[AccountantName] = ACCOUNTANTS
) -> dict[str, float]:
    """Epsilon of ``event`` for each accountant in ``accountants``, as ``{name: epsilon}``."""
    names = check_accountants(accountants)
    return {name: epsilon(event, delta=delta, accountant=name) for name in names}


def _guarded(name: str, event: dp_accounting.DpEvent, compute: Callable[[], _T]) -> _T:
    """``compute()``, with any failure inside dp-accounting turned into a one-line AccountingError."""
    try:
        return compute()
    except ConfigError:
        raise
    except (ValueError, ArithmeticError, AssertionError, dp_accounting.UnsupportedEventError) as err:
        other = next((a for a in accountants_for(event) if a != name), None)
        hint = f"try the {other} accountant, or" if other else "try"
        detail = " ".join(str(err).split()) or type(err).__name__
        raise AccountingError(
            f"the {name} accountant failed on {describe_event(event)}: {detail}; "
            f"{hint} a noise multiplier, sampling rate or delta further from the extremes"
        ) from err


def describe_event(event: dp_accounting.DpEvent, *, limit: int = 160) -> str:
    """A short one-line description of ``event`` for messages, e.g. ``1000 x Poisson(q=1e-06, z=50)``."""
    text = _describe(event)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(event: dp_accounting.DpEvent) -> str:
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return f"{event.count} x {_describe(event.event)}"
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return "[" + ", ".join(_describe(e) for e in event.events) + "]"
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return f"Gaussian(z={event.noise_multiplier:g})"
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        return f"Poisson(q={event.sampling_probability:g}, {_describe(event.event)})"
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
        return f"FixedSize({event.sample_size} of {event.source_dataset_size}, {_describe(event.event)})"
    if isinstance(event, dp_accounting.SingleEpochTreeAggregationDpEvent):
        return f"Tree(steps={event.step_counts}, z={event.noise_multiplier:g})"
    return type(event).__name__


# -- rdp ------------------------------------------------------------------------------------------


def rdp_epsilon(rdp_values: np.ndarray, *, delta: float, orders: Sequence[float] = RDP_ORDERS) -> float:
    """Convert accumulated RDP values at ``orders`` to epsilon at ``delta`` (dp-accounting's conversion)."""
    d = check_delta(delta)
    try:
        eps, _ = rdp_privacy_accountant.compute_epsilon(list(orders), list(rdp_values), d)
    except ValueError as err:  # e.g. a negative RDP value from round-off inside dp-accounting
        raise AccountingError(
            f"the rdp accountant could not convert RDP to epsilon: {' '.join(str(err).split())}; "
            "try the pld accountant, or a noise multiplier or sampling rate further from the extremes"
        ) from err
    return float(eps)


def rdp_vector(event: dp_accounting.DpEvent, *, orders: Sequence[float] = RDP_ORDERS) -> np.ndarray:
    """Accumulated RDP of ``event`` at ``orders``, as ``RdpAccountant(orders).compose(event).rdp`` would give.

    Subsampled-Gaussian steps use a cached per-step vector (:func:`per_step_rdp`, or the fixed-size
    bound under replace-one adjacency), so composing many entries (a ledger, a calibration search, an
    epsilon curve) costs one vector addition each. Other event kinds fall back to a fresh
    ``RdpAccountant`` with the event's neighbouring relation.
    """
    order_tuple = tuple(float(a) for a in orders)
    relation = _neighboring_relation(event)
    return _guarded("rdp", event, lambda: _rdp_of(event, 1, order_tuple, relation))


def _neighboring_relation(event: dp_accounting.DpEvent) -> dp_accounting.NeighboringRelation:
    if _has_event(event, dp_accounting.SingleEpochTreeAggregationDpEvent):
        if _has_event(event, dp_accounting.SampledWithoutReplacementDpEvent) or _has_event(
            event, dp_accounting.PoissonSampledDpEvent
        ):
            raise AccountingError(
                f"an event cannot mix tree aggregation with sampled releases, got {describe_event(event)}; "
                "account them separately"
            )
        return dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    fixed = _has_event(event, dp_accounting.SampledWithoutReplacementDpEvent)
    if fixed and _has_event(event, dp_accounting.PoissonSampledDpEvent):
        raise AccountingError(
            "an event cannot mix fixed-size sampling (replace-one adjacency) with Poisson sampling "
            f"(add-or-remove-one adjacency), got {describe_event(event)}; account them separately"
        )
    rel = dp_accounting.NeighboringRelation
    return rel.REPLACE_ONE if fixed else rel.ADD_OR_REMOVE_ONE


def _rdp_of(
    event: dp_accounting.DpEvent,
    count: int,
    orders: tuple[float, ...],
    relation: dp_accounting.NeighboringRelation,
) -> np.ndarray:
    if isinstance(event, dp_accounting.NoOpDpEvent) or count == 0:
        return np.zeros(len(orders))
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _rdp_of(event.event, count * event.count, orders, relation)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        total = np.zeros(len(orders))
        for sub in event.events:
            total += _rdp_of(sub, count, orders, relation)
        return total
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return count * per_step_rdp(noise_multiplier=event.noise_multiplier, sampling_rate=1.0, orders=orders)
    if isinstance(event, dp_accounting.PoissonSampledDpEvent) and isinstance(
        event.event, dp_accounting.GaussianDpEvent
    ):
        q, z = event.sampling_probability, event.event.noise_multiplier
        if q == 0:
            return np.zeros(len(orders))
        return count * per_step_rdp(noise_multiplier=z, sampling_rate=q, orders=orders)
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent) and isinstance(
        event.event, dp_accounting.GaussianDpEvent
    ):
        n, m, z = event.source_dataset_size, event.sample_size, event.event.noise_multiplier
        return count * _per_step_rdp_fixed_size(float(z), int(n), int(m), orders)
    acc = rdp.RdpAccountant(orders=list(orders), neighboring_relation=relation)
    _compose(acc, dp_accounting.SelfComposedDpEvent(event=event, count=count))
    return acc.rdp


def per_step_rdp(*, noise_multiplier: float, sampling_rate: float, orders: Sequence[float] = RDP_ORDERS) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at ``orders`` (read-only array, cached).

    dp-accounting's values, checked order by order against a cancellation-free recomputation (they lose
    accuracy to round-off for tiny ``q`` with large ``z``): integer orders are replaced when they differ by
    more than :data:`RDP_TOLERANCE` relative, suspect fractional orders by the log-convexity upper bound
    (see :mod:`fedmodel.privacy.rdp_repair`).

    So every value is dp-accounting's (exactly, in ordinary regimes) or an upper bound.
    """
    return _per_step_rdp(float(noise_multiplier), float(sampling_rate), tuple(float(a) for a in orders))


@functools.lru_cache(maxsize=4096)
def _per_step_rdp(z: float, q: float, orders: tuple[float, ...]) -> np.ndarray:
    acc = rdp.RdpAccountant(orders=list(orders))
    acc.compose(_step_event(z, q))
    values = acc.rdp
    if 0 < q < 1 and z > 0:
        values = rdp_repair.checked_poisson_rdp(values, z, q, orders)
    values.setflags(write=False)
    return values


def per_step_rdp_fixed_size(
    *, noise_multiplier: float, population: int, size: int, orders: Sequence[float] = RDP_ORDERS
) -> np.ndarray:
    """RDP of one fixed-size-sampled step of a mechanism with noise multiplier ``z`` (read-only, cached).

    ``noise_multiplier`` is the mechanism's ``z`` (noise std / clip norm); the bound is that of
    ``SampledWithoutReplacementDpEvent(population, size, GaussianDpEvent(z / 2))`` under replace-one
    adjacency (see :func:`sampled_event`).
    """
    z = check_noise_multiplier(noise_multiplier)
    how = FixedSizeSampling(population=population, size=size)
    return _per_step_rdp_fixed_size(z / 2, how.population, how.size, tuple(float(a) for a in orders))


@functools.lru_cache(maxsize=256)
def _per_step_rdp_fixed_size(z: float, n: int, m: int, orders: tuple[float, ...]) -> np.ndarray:
    """RDP of one fixed-size-sampled Gaussian step (``z`` already the replace-one multiplier), cached."""
    if z == 0:
        values = np.full(len(orders), np.inf)
    else:
        acc = rdp.RdpAccountant(orders=list(orders), neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        event = dp_accounting.SampledWithoutReplacementDpEvent(n, m, dp_accounting.GaussianDpEvent(z))
        acc.compose(event)
        values = acc.rdp
        if not np.all(values >= 0) or np.any(np.isnan(values)):
            raise AccountingError(
                f"the rdp accountant's fixed-size bound is numerically unreliable for {m} of {n} with z={z:g} "
                f"(negative or NaN RDP); try Poisson sampling or a noise multiplier further from the extremes"
            )
    values.setflags(write=False)
    return values


# -- pld ------------------------------------------------------------------------------------------


def pld_epsilon(
    event: dp_accounting.DpEvent, *, delta: float, value_discretization_interval: float = PLD_DISCRETIZATION
) -> float:
    """Epsilon of ``event`` at ``delta`` from privacy loss distributions (see :func:`epsilon`).

    ``value_discretization_interval`` other than :data:`PLD_DISCRETIZATION` is for searches only (a
    coarser grid is faster and still an upper bound, but a looser one).
    """
    d = check_delta(delta)
    if not _is_real(value_discretization_interval) or not 0 < value_discretization_interval < 1:
        raise ConfigError(f"value_discretization_interval must be in (0, 1), got {value_discretization_interval!r}")
    if _has_event(event, dp_accounting.SampledWithoutReplacementDpEvent):
        raise AccountingError(f"pld does not support fixed-size sampling; use rdp (event: {describe_event(event)})")
    return _guarded("pld", event, lambda: _pld_epsilon(event, d, float(value_discretization_interval)))


def _pld_epsilon(event: dp_accounting.DpEvent, delta: float, interval: float) -> float:
    """PLDAccountant's answer, composing cached PLDs; Gaussian-only events in closed form."""
    subsampled: list[tuple[float, float, int]] = []  # (z, q, count)
    inverse_variance = 0.0  # sum of count / z^2 over un-subsampled Gaussians: one Gaussian in total
    non_private = False

    def walk(e: dp_accounting.DpEvent, count: int) -> bool:  # False: not a kind handled here
        nonlocal inverse_variance, non_private
        if isinstance(e, dp_accounting.NoOpDpEvent) or count == 0:
            return True
        if isinstance(e, dp_accounting.SelfComposedDpEvent):
            return walk(e.event, count * e.count)
        if isinstance(e, dp_accounting.ComposedDpEvent):
            return all(walk(sub, count) for sub in e.events)
        if isinstance(e, dp_accounting.GaussianDpEvent):
            z, q = e.noise_multiplier, 1.0
        elif isinstance(e, dp_accounting.PoissonSampledDpEvent) and isinstance(e.event, dp_accounting.GaussianDpEvent):
            z, q = e.event.noise_multiplier, e.sampling_probability
        else:
            return False
        if q == 0:
            return True
        if z == 0:
            non_private = True
        elif q == 1:
            inverse_variance += count / z**2
        else:
            subsampled.append((float(z), float(q), count))
        return True

    if not walk(event, 1):
        acc = pld.PLDAccountant(value_discretization_interval=interval)
        _compose(acc, event)
        return float(acc.get_epsilon(delta))
    if non_private:
        return math.inf
    if not subsampled:
        if inverse_variance == 0:
            return 0.0
        return gaussian_epsilon(noise_multiplier=inverse_variance**-0.5, delta=delta)
    for z, _, _ in subsampled:
        _check_pld_size(z, interval)
    parts = [_pld_composed(z, q, count, interval) for z, q, count in subsampled]
    if inverse_variance > 0:  # mixed with un-subsampled steps: their one Gaussian as a PLD too
        parts.append(_pld_step(inverse_variance**-0.5, 1.0, interval))
    total = parts[0]
    for p in parts[1:]:
        total = total.compose(p)
    return float(total.get_epsilon_for_delta(delta))


#: Most grid points one PLD step may need; beyond it the pld accountant refuses (memory and minutes).
MAX_PLD_POINTS = 4_000_000
_PLD_TAIL_SIGMAS = 16.6  # dp-accounting's Gaussian PLD spans about +-8.3 standard deviations


def _check_pld_size(z: float, interval: float) -> None:
    """Fail fast (AccountingError) where one step's privacy-loss grid would exceed :data:`MAX_PLD_POINTS`.

    The loss of a Gaussian step spans about ``16.6 / z`` nats, so a tiny noise multiplier needs a huge grid
    (z = 0.01 at interval 1e-4: about 1.7e7 points per step, gigabytes once composed).
    """
    points = _PLD_TAIL_SIGMAS / (z * interval)
    if points > MAX_PLD_POINTS:
        raise AccountingError(
            f"the pld accountant would need about {points:.2g} grid points per step for noise multiplier {z:g} "
            f"at interval {interval:g} (limit {MAX_PLD_POINTS:.0e}); use the rdp accountant"
        )


@functools.lru_cache(maxsize=32)
def _pld_step(z: float, q: float, interval: float) -> privacy_loss_distribution.PrivacyLossDistribution:
    """One Gaussian step (``q == 1``) or one Poisson-subsampled one, built as PLDAccountant builds it."""
    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=z, sampling_prob=q, value_discretization_interval=interval
    )


@functools.lru_cache(maxsize=16)
def _pld_composed(z: float, q: float, count: int, interval: float) -> privacy_loss_distribution.PrivacyLossDistribution:
    step = _pld_step(z, q, interval)
    return step if count == 1 else step.self_compose(count)


def gaussian_epsilon(*, noise_multiplier: float, delta: float) -> float:
    """Exact epsilon at ``delta`` of one Gaussian mechanism with noise std / sensitivity ``noise_multiplier``.

    Closed form of Balle & Wang 2018 (https://arxiv.org/abs/1805.06530, Thm. 8), see
    :func:`fedmodel.privacy.gaussian.gaussian_epsilon`; the arguments are checked here first.
    """
    return gaussian.gaussian_epsilon(check_noise_multiplier(noise_multiplier), check_delta(delta))


def _compose(acc: dp_accounting.PrivacyAccountant, event: dp_accounting.DpEvent) -> None:
    name = "rdp" if isinstance(acc, rdp.RdpAccountant) else "pld"
    try:
        acc.compose(event)
    except dp_accounting.UnsupportedEventError as err:
        raise AccountingError(
            f"the {name} accountant does not support {describe_event(event)}: {' '.join(str(err).split())}"
        ) from err
