"""Budget planning: what epsilon a planned run spends, or what noise it needs for a target epsilon.

A :class:`BudgetPlan` describes either a central DP-SGD run (``examples``, ``batch_size``, ``epochs``;
unit of privacy: one example) or a federated DP-FedAvg run (``clients``, ``clients_per_round``,
``rounds``; unit: one client), with exactly one of ``noise_multiplier`` and ``target_epsilon``.
:func:`plan_budget` turns it into a :class:`BudgetReport`: sampling rate, steps, noise multiplier
(given or calibrated), epsilon per accountant and an epsilon curve over epochs/rounds.

Conventions (``fedmodel.privacy.accounting``): ``q = batch_size / examples`` and
``steps = ceil(epochs * examples / batch_size)`` (central), ``q = clients_per_round / clients`` and
``steps = rounds`` (federated); each step is a Poisson-subsampled Gaussian mechanism.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import ACCOUNTANTS, AccountantName
from fedmodel.privacy.calibration import calibrate_noise_multiplier, warn_delta
from fedmodel.privacy.ledger import ADJACENCY, Unit

#: Most points in an epsilon curve (the final epoch/round is always one of them).
CURVE_POINTS = 20

CENTRAL_SAMPLING = (
    "Poisson subsampling: each example joins each step independently with probability q = batch_size / examples"
)
FEDERATED_SAMPLING = (
    "Poisson subsampling: each client joins each round independently with probability "
    "q = clients_per_round / clients. Flower samples a fixed number of clients per round; the accounting "
    "assumes Poisson sampling at the same rate, as DP-FedAvg analyses do (McMahan et al. 2018)"
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
    accountants : tuple of {"rdp", "pld"}
        Accountants to report.
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
    accountants: tuple[AccountantName, ...] = ACCOUNTANTS

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
        object.__setattr__(self, "accountants", accounting.check_accountants(self.accountants))

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
    """The privacy guarantee of a :class:`BudgetPlan` (see :func:`plan_budget`)."""

    plan: BudgetPlan
    unit: Unit
    adjacency: str
    sampling: str
    sampling_rate: float
    steps: int
    steps_per_epoch: float | None
    noise_multiplier: float
    calibrated: bool
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
            "sampling_rate": self.sampling_rate,
            "steps": self.steps,
            "steps_per_epoch": self.steps_per_epoch,
            "noise_multiplier": self.noise_multiplier,
            "calibrated": self.calibrated,
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
    q, steps = plan.sampling_rate, plan.steps
    if plan.noise_multiplier is not None:
        z, calibrated = float(plan.noise_multiplier), False
    else:
        z = _calibrate(plan)
        calibrated = True
    curve = tuple(
        CurvePoint(
            at=at,
            steps=s,
            epsilon=accounting.epsilons(
                accounting.dp_event(noise_multiplier=z, sampling_rate=q, steps=s),
                delta=plan.delta,
                accountants=plan.accountants,
            ),
        )
        for at, s in _curve_points(plan)
    )
    warnings = [w for w in [warn_delta(plan.delta, plan.population, unit=plan.unit)] if w]
    if z == 0:
        warnings.append("noise_multiplier=0 adds no noise: the run is not differentially private (epsilon = inf)")
    return BudgetReport(
        plan=plan,
        unit=plan.unit,
        adjacency=ADJACENCY[plan.unit],
        sampling=FEDERATED_SAMPLING if plan.federated else CENTRAL_SAMPLING,
        sampling_rate=q,
        steps=steps,
        steps_per_epoch=plan.steps_per_epoch,
        noise_multiplier=z,
        calibrated=calibrated,
        target_epsilon=plan.target_epsilon,
        delta=plan.delta,
        accountants=plan.accountants,
        epsilon=dict(curve[-1].epsilon),
        curve_axis="round" if plan.federated else "epoch",
        curve=curve,
        warnings=tuple(warnings),
    )


def _calibrate(plan: BudgetPlan) -> float:
    """The smallest z meeting the target under every requested accountant (the largest of their z's).

    An accountant already within the target at the current z needs no search of its own.
    """
    target = float(plan.target_epsilon)  # type: ignore[arg-type]
    kw = {"delta": plan.delta, "sampling_rate": plan.sampling_rate, "steps": plan.steps}
    z = 0.0
    for name in plan.accountants:
        event = accounting.dp_event(noise_multiplier=z, sampling_rate=plan.sampling_rate, steps=plan.steps)
        if z == 0.0 or accounting.epsilon(event, delta=plan.delta, accountant=name) > target:
            z = max(z, calibrate_noise_multiplier(target_epsilon=target, accountant=name, **kw))  # type: ignore[arg-type]
    return z


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
