"""The privacy ledger: a record of the noisy releases that actually ran, and budget checks on it.

A trainer calls :meth:`PrivacyLedger.record_release` once per noisy step (central DP-SGD) or round
(federated DP-FedAvg) with the event its mechanism returned (``GaussianDpEvent(z)``, see
``fedmodel.privacy.mechanism``) and how the step's units were drawn (:class:`PoissonSampling` at rate
``q``, or :class:`FixedSizeSampling` of ``m`` of ``N``). :meth:`PrivacyLedger.record` is the Poisson
shorthand (``noise_multiplier=``, ``sampling_rate=``). Consecutive releases with the same
``(z, sampling, epoch)`` are merged into one :class:`LedgerEntry` with a count, so a ledger of a million
steps stays a few lines long and its step total stays exact. Epsilon is always computed from the ledger
(what ran), never re-derived from the configuration.

A ledger holds either Poisson releases (add-or-remove-one adjacency; both accountants) or fixed-size
ones (replace-one adjacency; the ``rdp`` accountant only, see :attr:`PrivacyLedger.accountants`), never
both: the two guarantees are about different neighbouring datasets and do not compose.

The ledger is saved as JSON in the run directory (:data:`LEDGER_FILE`), atomically (temp file + rename),
so a checkpointed run can resume it: load, then record the remaining steps; the result equals recording
all steps in one go. Format version 2 stores each entry's sampling (``{"kind": "poisson", "rate": q}`` or
``{"kind": "fixed-size", "population": N, "size": m}``); version-1 files (a ``sampling_rate`` per
entry, all Poisson) still load, and are saved as version 2.

Fail closed: :func:`remaining_steps` says how many more steps of a given mechanism and sampling fit in a
target epsilon, computed once by a search; a trainer stops *before* the step that would exceed the
budget. :func:`would_exceed` answers the same question for a single next step.

See ``fedmodel.privacy.accounting`` for the conventions (unit, adjacency, sampling).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import dp_accounting

from fedmodel.atomic import atomic_write
from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import (
    AccountantName,
    FixedSizeSampling,
    PoissonSampling,
    Sampling,
    TreeAggregation,
)

LEDGER_FILE = "privacy_ledger.json"
LEDGER_FORMAT = "fedmodel.privacy_ledger"
LEDGER_VERSION = 2
#: Versions :meth:`PrivacyLedger.from_dict` reads (1: every entry Poisson, with a ``sampling_rate``).
LEDGER_VERSIONS = (1, 2)
#: :func:`remaining_steps` never answers more than this many steps.
MAX_STEPS = 10**9

Unit = Literal["example", "client"]
SamplingName = Literal["poisson", "shuffle", "fixed-size", "tree"]
UNITS: tuple[Unit, ...] = get_args(Unit)
SAMPLINGS: tuple[SamplingName, ...] = get_args(SamplingName)
ADJACENCY: dict[Unit, str] = {
    "example": "add-or-remove-one-example",
    "client": "add-or-remove-one-client (all of one client's data)",
}
#: Adjacency of tree aggregation (DP-FTRL; dp-accounting's REPLACE_SPECIAL): one unit's contribution replaced
#: by zero, each unit taking part at most once per tree.
TREE_ADJACENCY: dict[Unit, str] = {
    "example": "replace-one-example-with-zero (each example at most once per tree)",
    "client": "replace-one-client-with-zero (each client at most once per tree)",
}
#: Adjacency of fixed-size sampling (the population size is public; one unit's data is replaced).
REPLACE_ADJACENCY: dict[Unit, str] = {
    "example": "replace-one-example",
    "client": "replace-one-client (all of one client's data)",
}


@dataclass(frozen=True)
class LedgerEntry:
    """``count`` consecutive releases of a Gaussian mechanism with noise multiplier ``z`` under ``sampling``.

    ``noise_multiplier`` is the mechanism's ``z`` (noise std / clip norm, add-or-remove convention);
    ``epoch`` is the epoch (central) or round (federated) the steps belong to, counted from 1, or None.
    """

    noise_multiplier: float
    sampling: Sampling
    count: int
    epoch: int | None = None

    def __post_init__(self) -> None:
        accounting.check_noise_multiplier(self.noise_multiplier)
        accounting.check_sampling(self.sampling)
        if accounting.check_steps(self.count, name="count") < 1:
            raise ConfigError(f"count must be >= 1, got {self.count!r}")
        if self.epoch is not None:
            accounting.check_steps(self.epoch, name="epoch")
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))

    @property
    def sampling_rate(self) -> float:
        """The fraction of units in each step: ``q`` (Poisson) or ``m / N`` (fixed-size)."""
        return self.sampling.rate

    @property
    def fixed_size(self) -> bool:
        return isinstance(self.sampling, FixedSizeSampling)

    @property
    def tree(self) -> bool:
        return isinstance(self.sampling, TreeAggregation)

    def dp_event(self, count: int | None = None) -> dp_accounting.DpEvent:
        """The entry's DpEvent, or that of its first ``count`` steps."""
        n = self.count if count is None else count
        return accounting.steps_event(dp_accounting.GaussianDpEvent(self.noise_multiplier), self.sampling, steps=n)

    def to_dict(self) -> dict[str, Any]:
        """The version-2 JSON form (see the module docstring)."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sampling": _sampling_dict(self.sampling),
            "count": self.count,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, version: int = LEDGER_VERSION) -> LedgerEntry:
        """An entry from its JSON form of ledger format ``version`` (1: Poisson ``sampling_rate``)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"privacy ledger entry must be an object, got {_head(raw)}")
        if version == 1:
            sampling: Sampling = PoissonSampling(raw["sampling_rate"])
        else:
            sampling = _sampling_from_dict(raw["sampling"])
        return cls(raw["noise_multiplier"], sampling, raw["count"], raw.get("epoch"))


def _kind(entry: LedgerEntry) -> Literal["poisson", "fixed-size", "tree"]:
    return "fixed-size" if entry.fixed_size else ("tree" if entry.tree else "poisson")


def _sampling_dict(sampling: Sampling) -> dict[str, Any]:
    if isinstance(sampling, TreeAggregation):
        return {"kind": "tree", "tree": sampling.tree}
    if isinstance(sampling, FixedSizeSampling):
        return {"kind": "fixed-size", "population": sampling.population, "size": sampling.size}
    return {"kind": "poisson", "rate": sampling.rate}


def _sampling_from_dict(raw: object) -> Sampling:
    if not isinstance(raw, dict):
        raise ConfigError(f"privacy ledger entry sampling must be an object, got {_head(raw)}")
    kind = raw.get("kind")
    if kind == "poisson":
        return PoissonSampling(raw["rate"])
    if kind == "fixed-size":
        return FixedSizeSampling(population=raw["population"], size=raw["size"])
    if kind == "tree":
        return TreeAggregation(raw["tree"])
    raise ConfigError(f"privacy ledger entry sampling kind must be 'poisson', 'fixed-size' or 'tree', got {kind!r}")


@dataclass
class PrivacyLedger:
    """What ran: noisy releases plus the facts needed to state the guarantee.

    Parameters
    ----------
    unit : {"example", "client"}
        Unit of privacy: central DP-SGD protects examples, federated DP protects clients.
    population : int
        Number of examples (central) or clients (federated); ``q`` is relative to it.
    sampling : {"poisson", "shuffle", "fixed-size"}
        How batches (clients) were actually drawn. Fixed-size releases need "fixed-size". Poisson
        releases in a ledger that says otherwise (e.g. version-1 ledgers of runs that shuffled) are
        accounted as Poisson at the same rate; reports say so.
    steps_per_epoch : int or None
        Central runs: optimizer steps per epoch, used to place epoch boundaries when entries carry no
        epoch. None for federated runs (one step per round).
    delta : float or None
        The delta the run targets, in (0, 1).
    adjacency : str or None
        Defaults to add-or-remove-one-example (unit "example") or -client (unit "client"), and to
        replace-one-... once the ledger holds fixed-size releases.
    notes : list of str
        Free text kept with the ledger (e.g. "clip norm 1.0", "resumed at step 5000").
    """

    unit: Unit
    population: int
    sampling: SamplingName = "poisson"
    steps_per_epoch: int | None = None
    delta: float | None = None
    adjacency: str | None = None
    notes: list[str] = field(default_factory=list)
    _entries: list[LedgerEntry] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if accounting.check_steps(self.population, name="population") < 1:
            raise ConfigError(f"population must be >= 1, got {self.population!r}")
        if self.steps_per_epoch is not None and accounting.check_steps(self.steps_per_epoch) < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch!r}")
        if self.delta is not None:
            self.delta = accounting.check_delta(self.delta)
        if self.adjacency is None:
            self.adjacency = ADJACENCY[self.unit]
        if not isinstance(self.notes, list) or not all(isinstance(n, str) for n in self.notes):
            raise ConfigError(f"notes must be a list of strings, got {self.notes!r}")

    # -- recording --------------------------------------------------------------------------------

    def record_release(
        self,
        event: dp_accounting.GaussianDpEvent,
        sampling: Sampling,
        *,
        count: int = 1,
        epoch: int | None = None,
    ) -> None:
        """Append ``count`` releases of the mechanism ``event`` on units drawn by ``sampling``.

        ``event`` is what the mechanism returned (``GaussianDpEvent(z)``, add-or-remove convention);
        merged into the last entry when ``(z, sampling, epoch)`` are the same. Raises ConfigError,
        before changing anything, for bad input, fixed-size releases in a ledger whose ``sampling`` is
        not "fixed-size", or a mix of Poisson and fixed-size releases.
        """
        if not isinstance(event, dp_accounting.GaussianDpEvent):
            raise ConfigError(f"event must be a dp_accounting.GaussianDpEvent, got {event!r}")
        new = LedgerEntry(accounting.check_noise_multiplier(event.noise_multiplier), sampling, count, epoch)
        self._check_kind(new)
        last = self._entries[-1] if self._entries else None
        if last is not None and (last.noise_multiplier, last.sampling, last.epoch) == (
            new.noise_multiplier,
            new.sampling,
            new.epoch,
        ):
            self._entries[-1] = LedgerEntry(last.noise_multiplier, last.sampling, last.count + new.count, last.epoch)
        else:
            self._entries.append(new)
        self._sync_adjacency()

    def record(
        self, *, noise_multiplier: float, sampling_rate: float, count: int = 1, epoch: int | None = None
    ) -> None:
        """Append ``count`` Poisson-sampled steps of ``(z, q)``: :meth:`record_release` with ``PoissonSampling(q)``."""
        z = accounting.check_noise_multiplier(noise_multiplier)
        q = accounting.check_sampling_rate(sampling_rate)
        self.record_release(dp_accounting.GaussianDpEvent(z), PoissonSampling(q), count=count, epoch=epoch)

    def _check_kind(self, new: LedgerEntry) -> None:
        if new.fixed_size and self.sampling != "fixed-size":
            raise ConfigError(
                f"a fixed-size release needs a ledger with sampling='fixed-size', got sampling={self.sampling!r}"
            )
        if new.tree and self.sampling != "tree":
            raise ConfigError(f"a tree release needs a ledger with sampling='tree', got sampling={self.sampling!r}")
        kind = self.release_sampling
        if kind is not None and kind != _kind(new):
            raise ConfigError(
                "a ledger holds either Poisson or fixed-size or tree releases (different adjacency), not a mix; "
                f"it holds {kind} releases, got {new.sampling!r}"
            )

    def _sync_adjacency(self) -> None:
        """Default adjacency text follows the releases: replace-one for fixed-size, replace-with-zero for trees."""
        if self.adjacency in (ADJACENCY[self.unit], REPLACE_ADJACENCY[self.unit], TREE_ADJACENCY[self.unit]):
            kind = self.release_sampling
            table = {"fixed-size": REPLACE_ADJACENCY, "tree": TREE_ADJACENCY}.get(kind or "", ADJACENCY)
            self.adjacency = table[self.unit]

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def steps(self) -> int:
        """Total noisy steps (rounds) recorded."""
        return sum(e.count for e in self._entries)

    @property
    def release_sampling(self) -> Literal["poisson", "fixed-size", "tree"] | None:
        """How the recorded releases were accounted: "poisson", "fixed-size", "tree", or None when empty."""
        if not self._entries:
            return None
        return _kind(self._entries[0])

    @property
    def accountants(self) -> tuple[AccountantName, ...]:
        """The accountants that apply: ``("rdp",)`` for fixed-size releases, else both."""
        return accounting.accountants_for(self.dp_event())

    # -- accounting -------------------------------------------------------------------------------

    def dp_event(self, steps: int | None = None) -> dp_accounting.ComposedDpEvent:
        """All entries (or the first ``steps`` steps) composed into one ``ComposedDpEvent``."""
        limit = self.steps if steps is None else accounting.check_steps(steps)
        if limit > self.steps:
            raise ConfigError(f"steps must be <= the {self.steps} steps recorded, got {steps}")
        runs: list[list[Any]] = []  # [z, sampling, count]; entries that differ only in epoch compose as one
        left = limit
        for entry in self._entries:
            if left == 0:
                break
            take = min(entry.count, left)
            if runs and runs[-1][:2] == [entry.noise_multiplier, entry.sampling]:
                runs[-1][2] += take
            else:
                runs.append([entry.noise_multiplier, entry.sampling, take])
            left -= take
        events = [accounting.steps_event(dp_accounting.GaussianDpEvent(z), how, steps=n) for z, how, n in runs]
        return dp_accounting.ComposedDpEvent(events=events)

    def epsilon(self, delta: float | None = None, accountant: AccountantName = "rdp") -> float:
        """Epsilon of everything recorded, at ``delta`` (default: the ledger's own delta).

        Raises AccountingError for an accountant not in :attr:`accountants`.
        """
        return accounting.epsilon(self.dp_event(), delta=self.resolve_delta(delta), accountant=accountant)

    def boundaries(self) -> list[tuple[int, int]]:
        """``(epoch_or_round, steps_so_far)`` at the end of each epoch (central) or round (federated).

        Epochs come from the entries' ``epoch`` when recorded, else from ``steps_per_epoch``; a ledger
        of unit "client" without epochs has one round per step. The last point is always all steps.
        """
        total = self.steps
        if total == 0:
            return []
        if any(e.epoch is not None for e in self._entries):
            out: dict[int, int] = {}
            done, label = 0, 0
            for e in self._entries:
                done += e.count
                label = e.epoch if e.epoch is not None else label
                out[label] = done
            points = sorted(out.items(), key=lambda p: p[1])
        elif self.steps_per_epoch is not None:
            n = self.steps_per_epoch
            points = [(k, k * n) for k in range(1, total // n + 1)]
            if total % n:
                points.append((math.ceil(total / n), total))
        elif self.unit == "client":
            points = [(k, k) for k in range(1, total + 1)]
        else:
            points = [(1, total)]
        return points

    def epsilon_curve(
        self,
        delta: float | None = None,
        accountant: AccountantName = "rdp",
        points: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """``(steps, epsilon)`` after each step count in ``points`` (default: each epoch/round boundary)."""
        d = self.resolve_delta(delta)
        at = [s for _, s in self.boundaries()] if points is None else [accounting.check_steps(p) for p in points]
        return [(s, accounting.epsilon(self.dp_event(s), delta=d, accountant=accountant)) for s in at]

    def resolve_delta(self, delta: float | None) -> float:
        """``delta`` if given (validated), else the ledger's own delta; ConfigError when neither exists."""
        if delta is None:
            if self.delta is None:
                raise ConfigError("delta is required: the ledger has no delta and none was given")
            return self.delta
        return accounting.check_delta(delta)

    # -- persistence ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "unit": self.unit,
            "adjacency": self.adjacency,
            "sampling": self.sampling,
            "population": self.population,
            "steps_per_epoch": self.steps_per_epoch,
            "delta": self.delta,
            "notes": list(self.notes),
            "steps": self.steps,
            "entries": [e.to_dict() for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger written by :meth:`to_dict` (format version 1 or 2); malformed data raises ConfigError."""
        if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
            raise ConfigError(f"expected a privacy ledger with format {LEDGER_FORMAT!r}, got {_head(data)}")
        version = data.get("version")
        if isinstance(version, bool) or version not in LEDGER_VERSIONS:
            raise ConfigError(
                f"privacy ledger version must be one of {', '.join(map(str, LEDGER_VERSIONS))}, got {version!r}"
            )
        try:
            ledger = cls(
                unit=data["unit"],
                population=data["population"],
                sampling=data.get("sampling", "poisson"),
                steps_per_epoch=data.get("steps_per_epoch"),
                delta=data.get("delta"),
                adjacency=data.get("adjacency"),
                notes=list(data.get("notes", [])),
            )
            if not isinstance(data["entries"], list):
                raise ConfigError(f"privacy ledger entries must be a list, got {_head(data['entries'])}")
            for raw in data["entries"]:
                entry = LedgerEntry.from_dict(raw, version=version)
                ledger._check_kind(entry)
                ledger._entries.append(entry)
        except (KeyError, TypeError) as err:
            raise ConfigError(f"privacy ledger is missing or has a malformed field: {err!r}") from err
        if "steps" in data and data["steps"] != ledger.steps:
            raise ConfigError(f"privacy ledger says steps={data['steps']!r} but its entries add up to {ledger.steps}")
        ledger._sync_adjacency()
        return ledger

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ledger as JSON to ``path`` (a file, or a directory to hold :data:`LEDGER_FILE`)."""
        target = _ledger_path(path)
        atomic_write(target, json.dumps(self.to_dict(), indent=2) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """Read a ledger from ``path`` (a file, or a directory holding :data:`LEDGER_FILE`)."""
        target = _ledger_path(path)
        if not target.is_file():
            raise ConfigError(f"privacy ledger {target} does not exist")
        try:
            data = json.loads(target.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"privacy ledger {target} is not valid JSON: {err}") from err
        return cls.from_dict(data)


def _head(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 80 else text[:77] + "..."


def _ledger_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / LEDGER_FILE if p.is_dir() else p


# -- budget checks --------------------------------------------------------------------------------


def would_exceed(
    ledger: PrivacyLedger,
    *,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName = "rdp",
    noise_multiplier: float | None = None,
    sampling_rate: float | None = None,
    event: dp_accounting.GaussianDpEvent | None = None,
    sampling: Sampling | None = None,
) -> bool:
    """True if one more step after the ledger would take epsilon above ``target_epsilon``.

    The next step is the mechanism ``event`` (or ``noise_multiplier``) on units drawn by ``sampling``
    (or Poisson at ``sampling_rate``); give one of each pair. With RDP this costs one vector addition
    (per-step RDP is cached), so it can run every step; with PLD it composes the whole ledger (tens of
    ms), so prefer :func:`remaining_steps` once.
    """
    mech, how = _next_step(noise_multiplier, sampling_rate, event, sampling)
    return not _within_budget(ledger, mech, how, delta, target_epsilon, accountant)(1)


def remaining_steps(
    ledger: PrivacyLedger,
    *,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName = "rdp",
    noise_multiplier: float | None = None,
    sampling_rate: float | None = None,
    event: dp_accounting.GaussianDpEvent | None = None,
    sampling: Sampling | None = None,
) -> int:
    """The largest ``k`` such that the ledger plus ``k`` more steps keeps epsilon <= target.

    The steps are as in :func:`would_exceed`. Found by a galloping then binary search (epsilon grows
    with the number of steps), so recording exactly ``k`` more steps stays within the budget and
    ``k + 1`` exceeds it. 0 if even one step exceeds it (or the ledger already does); at most
    :data:`MAX_STEPS`. AccountingError when ``accountant`` does not apply (PLD and fixed-size sampling).
    """
    mech, how = _next_step(noise_multiplier, sampling_rate, event, sampling)
    fits = _within_budget(ledger, mech, how, delta, target_epsilon, accountant)
    guess = 1
    if accountant == "pld":  # RDP is cheap and usually a little looser: a good starting point
        guess = max(1, _largest(_within_budget(ledger, mech, how, delta, target_epsilon, "rdp"), 1))
    return _largest(fits, guess)


def steps_within_budget(
    *,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName,
    noise_multiplier: float | None = None,
    sampling_rate: float | None = None,
    event: dp_accounting.GaussianDpEvent | None = None,
    sampling: Sampling | None = None,
) -> int:
    """How many steps (as in :func:`would_exceed`) fit in ``target_epsilon`` from an empty ledger."""
    mech, how = _next_step(noise_multiplier, sampling_rate, event, sampling)
    empty = PrivacyLedger(unit="example", population=1)
    return remaining_steps(
        empty, event=mech, sampling=how, delta=delta, target_epsilon=target_epsilon, accountant=accountant
    )


def _next_step(
    noise_multiplier: float | None,
    sampling_rate: float | None,
    event: dp_accounting.GaussianDpEvent | None,
    sampling: Sampling | None,
) -> tuple[dp_accounting.GaussianDpEvent, Sampling]:
    """The next step's mechanism event and sampling, from exactly one argument of each pair."""
    if (noise_multiplier is None) == (event is None):
        raise ConfigError(
            "give exactly one of noise_multiplier and event, got "
            f"noise_multiplier={noise_multiplier!r}, event={event!r}"
        )
    if (sampling_rate is None) == (sampling is None):
        raise ConfigError(
            "give exactly one of sampling_rate and sampling, got "
            f"sampling_rate={sampling_rate!r}, sampling={sampling!r}"
        )
    if event is None:
        event = dp_accounting.GaussianDpEvent(accounting.check_noise_multiplier(noise_multiplier))  # type: ignore[arg-type]
    elif not isinstance(event, dp_accounting.GaussianDpEvent):
        raise ConfigError(f"event must be a dp_accounting.GaussianDpEvent, got {event!r}")
    else:
        accounting.check_noise_multiplier(event.noise_multiplier)
    if sampling is None:
        sampling = PoissonSampling(accounting.check_sampling_rate(sampling_rate))  # type: ignore[arg-type]
    return event, accounting.check_sampling(sampling)


def _within_budget(
    ledger: PrivacyLedger,
    mech: dp_accounting.GaussianDpEvent,
    how: Sampling,
    delta: float,
    target: float,
    accountant: AccountantName,
) -> Callable[[int], bool]:
    delta = accounting.check_delta(delta)
    accounting.check_accountant(accountant)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < math.inf:
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target!r}")
    past = ledger.dp_event()

    def fits(k: int) -> bool:
        extra = accounting.steps_event(mech, how, steps=k)
        event = dp_accounting.ComposedDpEvent(events=[past, extra])
        return accounting.epsilon(event, delta=delta, accountant=accountant) <= target

    return fits


def _largest(fits: Callable[[int], bool], guess: int) -> int:
    """Largest k in [0, MAX_STEPS] with fits(k), assuming fits is monotone (true, then false)."""
    if not fits(1):
        return 0
    lo = 1  # fits(lo) is True
    hi = min(max(guess, 2), MAX_STEPS)
    while fits(hi):
        if hi == MAX_STEPS:
            return MAX_STEPS
        lo, hi = hi, min(2 * hi, MAX_STEPS)
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
