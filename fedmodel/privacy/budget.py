"""Budget planning: what epsilon a planned run spends, or what noise it needs for a target epsilon.

A :class:`BudgetPlan` describes either a central DP-SGD run (``examples``, ``batch_size``, ``epochs``;
unit of privacy: one example) or a federated DP-FedAvg run (``clients``, ``clients_per_round``,
``rounds``; unit: one client, drawn by Poisson or fixed-size sampling), with exactly one of
``noise_multiplier`` and ``target_epsilon``. :func:`plan_budget` turns it into a :class:`BudgetReport`:
sampling and bound, steps, noise multiplier (given or calibrated), epsilon per accountant and an epsilon
curve over epochs/rounds.

Conventions (``fedmodel.privacy.accounting``): ``q = batch_size / examples`` and
``steps = ceil(epochs * examples / batch_size)`` (central), ``steps = rounds`` (federated). Central
steps and Poisson federated rounds are Poisson-subsampled Gaussian mechanisms at rate ``q``
(``clients_per_round / clients`` for federated), under add-or-remove-one adjacency. Fixed-size
federated rounds (exactly ``clients_per_round`` of ``clients``, without replacement) use the RDP bound
for sampling without replacement under replace-one adjacency; only the ``rdp`` accountant applies.

With a target epsilon and several accountants, the noise is calibrated with each and the smallest
noise multiplier is used: every accountant's epsilon is a valid upper bound on the true epsilon, so
meeting the target under any one of them suffices. The report names the accountant the calibration
used and still shows every accountant's epsilon.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import dp_accounting

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import AccountantName, FixedSizeSampling, PoissonSampling, Sampling
from fedmodel.privacy.calibration import calibrate_noise_multiplier, warn_delta
from fedmodel.privacy.ledger import ADJACENCY, REPLACE_ADJACENCY, Unit

#: Most points in an epsilon curve (the final epoch/round is always one of them).
CURVE_POINTS = 20

ClientSampling = Literal["poisson", "fixed-size"]
CLIENT_SAMPLINGS: tuple[ClientSampling, ...] = get_args(ClientSampling)

CENTRAL_SAMPLING = (
    "Poisson subsampling: each example joins each step independently with probability q = batch_size / examples"
)
FEDERATED_SAMPLING = (
    "Poisson subsampling: each client joins each round independently with probability "
    "q = clients_per_round / clients, so the number of clients varies from round to round "
    "(clients_per_round on average); the bound holds only for clients drawn this way"
)
FIXED_SIZE_SAMPLING = (
    "fixed-size sampling without replacement: exactly clients_per_round of the clients in each round, "
    "uniformly at random"
)


def sampling_bound(kind: ClientSampling, unit: Unit) -> str:
    """The bound behind the epsilon for ``kind`` of sampling, naming the adjacency and the source."""
    if kind == "fixed-size":
        return (
            f"fixed-size sampling without replacement, replace-one-{unit}, Wang et al. 2019 RDP bound "
            "(https://arxiv.org/abs/1808.00087, Thm. 27; noise multiplier z/2 for the sensitivity 2 x clip); "
            "RDP only: dp-accounting's PLD has no such event"
        )
    return (
        f"Poisson subsampling, add-or-remove-one-{unit}: Poisson-subsampled Gaussian "
        "(RDP: Mironov et al. 2019; PLD: Doroshenko et al. 2022)"
    )


_CENTRAL = ("examples", "batch_size", "epochs")
_FEDERATED = ("clients", "clients_per_round", "rounds")


@dataclass(frozen=True)
class BudgetPlan:
    """A planned DP run, central or federated, validated on construction (ConfigError).

    Parameters
    ----------
    examples, batch_size, epochs : int, int, float
        Central DP-SGD: training examples, expected batch size, passes over the data (> 0).
    clients, clients_per_round, rounds : int
        Federated DP-FedAvg: client population, clients sampled per round, rounds.
    noise_multiplier : float or None
        Noise std / clip norm (``z``, >= 0). Give this or ``target_epsilon``, not both.
    target_epsilon : float or None
        Epsilon budget (> 0); the noise multiplier is then calibrated so that every requested
        accountant's epsilon is <= the target.
    delta : float
        In (0, 1); it should be well below 1 / population.
    accountants : tuple of {"rdp", "pld"}, or None
        Accountants to report; None (the default) means every accountant that applies (only "rdp"
        for fixed-size sampling, where asking for "pld" raises ConfigError).
    client_sampling : {"poisson", "fixed-size"}
        Federated plans: how clients are drawn each round (see the module docstring). Central plans
        are Poisson.
    """

    examples: int | None = None
    batch_size: int | None = None
    epochs: float | None = None
    clients: int | None = None
    clients_per_round: int | None = None
    rounds: int | None = None
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountants: tuple[AccountantName, ...] | None = None
    client_sampling: ClientSampling = "poisson"

    def __post_init__(self) -> None:
        central = [n for n in _CENTRAL if getattr(self, n) is not None]
        federated = [n for n in _FEDERATED if getattr(self, n) is not None]
        if central and federated:
            raise ConfigError(
                "give either central options (examples, batch_size, epochs) or federated options "
                f"(clients, clients_per_round, rounds), not both; got {', '.join(central + federated)}"
            )
        group = _CENTRAL if central or not federated else _FEDERATED
        missing = [n for n in group if getattr(self, n) is None]
        if missing:
            kind = "central" if group is _CENTRAL else "federated"
            raise ConfigError(f"a {kind} plan needs {', '.join(group)}; missing {', '.join(missing)}")
        for name in group:
            value = getattr(self, name)
            if name == "epochs":
                ok = _is_number(value) and 0 < value < math.inf
                expected = "a finite number > 0"
            else:
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1
                expected = "an integer >= 1"
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got {value!r}")
        per_step, population = (
            (self.batch_size, self.examples) if group is _CENTRAL else (self.clients_per_round, self.clients)
        )
        if per_step > population:  # type: ignore[operator]
            a, b = ("batch_size", "examples") if group is _CENTRAL else ("clients_per_round", "clients")
            raise ConfigError(
                f"{a} must be <= {b} (sampling rate q = {a}/{b} <= 1), got {a}={per_step} > {b}={population}"
            )
        if self.client_sampling not in CLIENT_SAMPLINGS:
            raise ConfigError(
                f"client_sampling must be one of {', '.join(CLIENT_SAMPLINGS)}, got {self.client_sampling!r}"
            )
        if self.client_sampling == "fixed-size" and group is _CENTRAL:
            raise ConfigError("client_sampling='fixed-size' applies to federated plans (clients), got a central plan")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "give exactly one of noise_multiplier and target_epsilon, got "
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None:
            accounting.check_noise_multiplier(self.noise_multiplier)
        if self.target_epsilon is not None and not (
            _is_number(self.target_epsilon) and 0 < self.target_epsilon < math.inf
        ):
            raise ConfigError(f"target_epsilon must be a finite number > 0, got {self.target_epsilon!r}")
        accounting.check_delta(self.delta)
        applicable = accounting.accountants_for(
            accounting.sampled_event(dp_accounting.GaussianDpEvent(1.0), self.sampling)
        )
        names = applicable if self.accountants is None else accounting.check_accountants(self.accountants)
        refused = [n for n in names if n not in applicable]
        if refused:
            raise ConfigError(
                f"{', '.join(refused)} does not support fixed-size sampling; use rdp "
                f"(got accountants {', '.join(names)} with client_sampling='fixed-size')"
            )
        object.__setattr__(self, "accountants", names)

    @property
    def federated(self) -> bool:
        return self.clients is not None

    @property
    def unit(self) -> Unit:
        return "client" if self.federated else "example"

    @property
    def population(self) -> int:
        return int(self.clients if self.federated else self.examples)  # type: ignore[arg-type]

    @property
    def sampling(self) -> Sampling:
        """How each step's units are drawn (see ``fedmodel.privacy.accounting``)."""
        if self.client_sampling == "fixed-size":
            return FixedSizeSampling(population=int(self.clients), size=int(self.clients_per_round))  # type: ignore[arg-type]
        return PoissonSampling(self.sampling_rate)

    @property
    def sampling_rate(self) -> float:
        if self.federated:
            return self.clients_per_round / self.clients  # type: ignore[operator]
        return self.batch_size / self.examples  # type: ignore[operator]

    @property
    def steps_per_epoch(self) -> float | None:
        """Expected steps per epoch, ``examples / batch_size`` (central); None (federated)."""
        return None if self.federated else self.examples / self.batch_size  # type: ignore[operator]

    @property
    def length(self) -> float:
        """Epochs (central) or rounds (federated)."""
        return float(self.rounds if self.federated else self.epochs)  # type: ignore[arg-type]

    def steps_at(self, progress: float) -> int:
        """Noisy steps after ``progress`` epochs (central) or rounds (federated)."""
        if self.federated:
            return math.ceil(progress)
        # round before ceil so that e.g. 60 * 60000 / 256 is not pushed up by float error
        return math.ceil(round(progress * self.examples / self.batch_size, 9))  # type: ignore[operator]

    @property
    def steps(self) -> int:
        return self.steps_at(self.length)


@dataclass(frozen=True)
class CurvePoint:
    """Epsilon per accountant after ``at`` epochs (central) or rounds (federated), i.e. ``steps`` steps."""

    at: float
    steps: int
    epsilon: dict[str, float]


@dataclass(frozen=True)
class BudgetReport:
    """The privacy guarantee of a :class:`BudgetPlan` (see :func:`plan_budget`).

    ``sampling`` says how units are drawn and ``bound`` which bound the epsilon comes from;
    ``calibrated_with`` is the accountant whose calibration set the noise (None when the noise was
    given).
    """

    plan: BudgetPlan
    unit: Unit
    adjacency: str
    sampling: str
    bound: str
    sampling_rate: float
    steps: int
    steps_per_epoch: float | None
    noise_multiplier: float
    calibrated: bool
    calibrated_with: AccountantName | None
    target_epsilon: float | None
    delta: float
    accountants: tuple[AccountantName, ...]
    epsilon: dict[str, float]
    curve_axis: Literal["epoch", "round"]
    curve: tuple[CurvePoint, ...]
    warnings: tuple[str, ...]

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON-ready object (floats stay floats; infinite epsilon becomes the string "inf")."""
        return {
            "unit": self.unit,
            "adjacency": self.adjacency,
            "sampling": self.sampling,
            "client_sampling": self.plan.client_sampling if self.plan.federated else None,
            "bound": self.bound,
            "sampling_rate": self.sampling_rate,
            "steps": self.steps,
            "steps_per_epoch": self.steps_per_epoch,
            "noise_multiplier": self.noise_multiplier,
            "calibrated": self.calibrated,
            "calibrated_with": self.calibrated_with,
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "accountants": list(self.accountants),
            "epsilon": {k: _json_float(v) for k, v in self.epsilon.items()},
            "curve_axis": self.curve_axis,
            "curve": [
                {"at": p.at, "steps": p.steps, "epsilon": {k: _json_float(v) for k, v in p.epsilon.items()}}
                for p in self.curve
            ],
            "warnings": list(self.warnings),
            "plan": plan_dict(self.plan),
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def plan_budget(plan: BudgetPlan) -> BudgetReport:
    """Epsilon (per accountant) and an epsilon curve for ``plan``; calibrates noise for a target epsilon."""
    how, steps = plan.sampling, plan.steps
    calibrated_with: AccountantName | None = None
    if plan.noise_multiplier is not None:
        z = float(plan.noise_multiplier)
    else:
        z, calibrated_with = _calibrate(plan)
    mechanism = dp_accounting.GaussianDpEvent(z)
    accountants: tuple[AccountantName, ...] = plan.accountants  # type: ignore[assignment]
    curve = tuple(
        CurvePoint(
            at=at,
            steps=s,
            epsilon=accounting.epsilons(
                accounting.steps_event(mechanism, how, steps=s), delta=plan.delta, accountants=accountants
            ),
        )
        for at, s in _curve_points(plan)
    )
    warnings = [w for w in [warn_delta(plan.delta, plan.population, unit=plan.unit)] if w]
    if z == 0:
        warnings.append("noise_multiplier=0 adds no noise: the run is not differentially private (epsilon = inf)")
    fixed = isinstance(how, FixedSizeSampling)
    sampling = FIXED_SIZE_SAMPLING if fixed else (FEDERATED_SAMPLING if plan.federated else CENTRAL_SAMPLING)
    return BudgetReport(
        plan=plan,
        unit=plan.unit,
        adjacency=(REPLACE_ADJACENCY if fixed else ADJACENCY)[plan.unit],
        sampling=sampling,
        bound=sampling_bound("fixed-size" if fixed else "poisson", plan.unit),
        sampling_rate=plan.sampling_rate,
        steps=steps,
        steps_per_epoch=plan.steps_per_epoch,
        noise_multiplier=z,
        calibrated=calibrated_with is not None,
        calibrated_with=calibrated_with,
        target_epsilon=plan.target_epsilon,
        delta=plan.delta,
        accountants=accountants,
        epsilon=dict(curve[-1].epsilon),
        curve_axis="round" if plan.federated else "epoch",
        curve=curve,
        warnings=tuple(warnings),
    )


def _calibrate(plan: BudgetPlan) -> tuple[float, AccountantName]:
    """The smallest z meeting the target under any requested accountant, and that accountant.

    Every accountant's epsilon is an upper bound on the true epsilon, so the tightest one decides;
    ties go to the accountant listed first.
    """
    target = float(plan.target_epsilon)  # type: ignore[arg-type]
    found = [
        (
            calibrate_noise_multiplier(
                target_epsilon=target, delta=plan.delta, sampling=plan.sampling, steps=plan.steps, accountant=name
            ),
            i,
            name,
        )
        for i, name in enumerate(plan.accountants or ())
    ]
    z, _, name = min(found)
    return z, name


def _curve_points(plan: BudgetPlan) -> list[tuple[float, int]]:
    """Up to CURVE_POINTS evenly spaced (epoch or round, steps) pairs; the last is the whole run."""
    length = plan.length
    whole = length.is_integer()
    n = min(CURVE_POINTS, int(length)) if whole else CURVE_POINTS
    ats = [length * i / n for i in range(1, n + 1)]
    if whole:
        ats = sorted({float(round(a)) for a in ats})
    out: dict[int, float] = {}
    for at in ats:
        out[plan.steps_at(at)] = at
    return [(at, s) for s, at in sorted(out.items())]


def plan_dict(plan: BudgetPlan) -> dict[str, Any]:
    """The plan's fields as a plain dict (for logs and reports)."""
    return {k: _plain(v) for k, v in asdict(plan).items()}
