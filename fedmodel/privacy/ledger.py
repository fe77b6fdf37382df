"""The privacy ledger: a record of the noisy steps that actually ran, and budget checks on it.

A trainer calls :meth:`PrivacyLedger.record` once per noisy step (central DP-SGD) or round (federated
DP-FedAvg) with the noise multiplier ``z`` and sampling rate ``q`` it used. Consecutive steps with the
same ``(z, q, epoch)`` are merged into one :class:`LedgerEntry` with a count, so a ledger of a million
steps stays a few lines long and its step total stays exact. Epsilon is always computed from the ledger
(what ran), never re-derived from the configuration.

The ledger is saved as JSON in the run directory (:data:`LEDGER_FILE`), atomically (temp file + rename),
so a checkpointed run can resume it: load, then record the remaining steps; the result equals recording
all steps in one go.

Fail closed: :func:`remaining_steps` says how many more steps of a given ``(z, q)`` fit in a target
epsilon, computed once by a search; a trainer stops *before* the step that would exceed the budget.
:func:`would_exceed` answers the same question for a single next step.

See ``fedmodel.privacy.accounting`` for the conventions (unit, adjacency, Poisson sampling).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import dp_accounting

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import AccountantName

LEDGER_FILE = "privacy_ledger.json"
LEDGER_FORMAT = "fedmodel.privacy_ledger"
LEDGER_VERSION = 1
#: :func:`remaining_steps` never answers more than this many steps.
MAX_STEPS = 10**9

Unit = Literal["example", "client"]
Sampling = Literal["poisson", "shuffle", "fixed-size"]
UNITS: tuple[Unit, ...] = get_args(Unit)
SAMPLINGS: tuple[Sampling, ...] = get_args(Sampling)
ADJACENCY: dict[Unit, str] = {
    "example": "add-or-remove-one-example",
    "client": "add-or-remove-one-client (all of one client's data)",
}


@dataclass(frozen=True)
class LedgerEntry:
    """``count`` consecutive noisy steps with noise multiplier ``z`` and sampling rate ``q``.

    ``epoch`` is the epoch (central) or round (federated) the steps belong to, counted from 1, or None.
    """

    noise_multiplier: float
    sampling_rate: float
    count: int
    epoch: int | None = None

    def __post_init__(self) -> None:
        accounting.check_noise_multiplier(self.noise_multiplier)
        accounting.check_sampling_rate(self.sampling_rate)
        if accounting.check_steps(self.count, name="count") < 1:
            raise ConfigError(f"count must be >= 1, got {self.count!r}")
        if self.epoch is not None:
            accounting.check_steps(self.epoch, name="epoch")

    def dp_event(self, count: int | None = None) -> dp_accounting.DpEvent:
        """The entry's DpEvent, or that of its first ``count`` steps."""
        n = self.count if count is None else count
        return accounting.dp_event(noise_multiplier=self.noise_multiplier, sampling_rate=self.sampling_rate, steps=n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "count": self.count,
            "epoch": self.epoch,
        }


@dataclass
class PrivacyLedger:
    """What ran: noisy steps plus the facts needed to state the guarantee.

    Parameters
    ----------
    unit : {"example", "client"}
        Unit of privacy: central DP-SGD protects examples, federated DP protects clients.
    population : int
        Number of examples (central) or clients (federated); ``q`` is relative to it.
    sampling : {"poisson", "shuffle", "fixed-size"}
        How batches (clients) were actually drawn. The accounting assumes Poisson sampling; reports say
        so when the run used something else.
    steps_per_epoch : int or None
        Central runs: optimizer steps per epoch, used to place epoch boundaries when entries carry no
        epoch. None for federated runs (one step per round).
    delta : float or None
        The delta the run targets, in (0, 1).
    adjacency : str or None
        Defaults to add-or-remove-one-example (unit "example") or -client (unit "client").
    notes : list of str
        Free text kept with the ledger (e.g. "clip norm 1.0", "resumed at step 5000").
    """

    unit: Unit
    population: int
    sampling: Sampling = "poisson"
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

    def record(
        self, *, noise_multiplier: float, sampling_rate: float, count: int = 1, epoch: int | None = None
    ) -> None:
        """Append ``count`` steps; merged into the last entry when ``(z, q, epoch)`` are the same."""
        new = LedgerEntry(float(noise_multiplier), float(sampling_rate), count, epoch)
        last = self._entries[-1] if self._entries else None
        if last is not None and (last.noise_multiplier, last.sampling_rate, last.epoch) == (
            new.noise_multiplier,
            new.sampling_rate,
            new.epoch,
        ):
            self._entries[-1] = LedgerEntry(last.noise_multiplier, last.sampling_rate, last.count + count, last.epoch)
        else:
            self._entries.append(new)

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def steps(self) -> int:
        """Total noisy steps (rounds) recorded."""
        return sum(e.count for e in self._entries)

    # -- accounting -------------------------------------------------------------------------------

    def dp_event(self, steps: int | None = None) -> dp_accounting.ComposedDpEvent:
        """All entries (or the first ``steps`` steps) composed into one ``ComposedDpEvent``."""
        limit = self.steps if steps is None else accounting.check_steps(steps)
        if limit > self.steps:
            raise ConfigError(f"steps must be <= the {self.steps} steps recorded, got {steps}")
        runs: list[list[Any]] = []  # [z, q, count]; entries that differ only in epoch compose as one
        left = limit
        for entry in self._entries:
            if left == 0:
                break
            take = min(entry.count, left)
            if runs and runs[-1][:2] == [entry.noise_multiplier, entry.sampling_rate]:
                runs[-1][2] += take
            else:
                runs.append([entry.noise_multiplier, entry.sampling_rate, take])
            left -= take
        events = [accounting.dp_event(noise_multiplier=z, sampling_rate=q, steps=n) for z, q, n in runs]
        return dp_accounting.ComposedDpEvent(events=events)

    def epsilon(self, delta: float | None = None, accountant: AccountantName = "rdp") -> float:
        """Epsilon of everything recorded, at ``delta`` (default: the ledger's own delta)."""
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
        """Rebuild a ledger written by :meth:`to_dict`; malformed data raises ConfigError."""
        if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
            raise ConfigError(f"expected a privacy ledger with format {LEDGER_FORMAT!r}, got {_head(data)}")
        if data.get("version") != LEDGER_VERSION:
            raise ConfigError(f"privacy ledger version must be {LEDGER_VERSION}, got {data.get('version')!r}")
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
            for raw in data["entries"]:
                entry = LedgerEntry(raw["noise_multiplier"], raw["sampling_rate"], raw["count"], raw.get("epoch"))
                ledger._entries.append(entry)
        except (KeyError, TypeError) as err:
            raise ConfigError(f"privacy ledger is missing or has a malformed field: {err!r}") from err
        if "steps" in data and data["steps"] != ledger.steps:
            raise ConfigError(f"privacy ledger says steps={data['steps']!r} but its entries add up to {ledger.steps}")
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


def atomic_write(target: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``target`` through a temp file in the same directory and a rename."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    raw = data.encode() if isinstance(data, str) else data
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- budget checks --------------------------------------------------------------------------------


def would_exceed(
    ledger: PrivacyLedger,
    *,
    noise_multiplier: float,
    sampling_rate: float,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName = "rdp",
) -> bool:
    """True if one more step of ``(z, q)`` after the ledger would take epsilon above ``target_epsilon``.

    With RDP this costs one vector addition (per-step RDP is cached), so it can run every step; with
    PLD it composes the whole ledger (tens of ms), so prefer :func:`remaining_steps` once.
    """
    return not _within_budget(ledger, noise_multiplier, sampling_rate, delta, target_epsilon, accountant)(1)


def remaining_steps(
    ledger: PrivacyLedger,
    *,
    noise_multiplier: float,
    sampling_rate: float,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName = "rdp",
) -> int:
    """The largest ``k`` such that the ledger plus ``k`` steps of ``(z, q)`` keeps epsilon <= target.

    Found by a galloping then binary search (epsilon grows with the number of steps), so recording
    exactly ``k`` more steps stays within the budget and ``k + 1`` exceeds it. 0 if even one step
    exceeds it (or the ledger already does); at most :data:`MAX_STEPS`.
    """
    fits = _within_budget(ledger, noise_multiplier, sampling_rate, delta, target_epsilon, accountant)
    guess = 1
    if accountant == "pld":  # RDP is cheap and usually a little looser: a good starting point
        guess = max(
            1,
            _largest(_within_budget(ledger, noise_multiplier, sampling_rate, delta, target_epsilon, "rdp"), 1),
        )
    return _largest(fits, guess)


def steps_within_budget(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    delta: float,
    target_epsilon: float,
    accountant: AccountantName,
) -> int:
    """How many steps of ``(z, q)`` fit in ``target_epsilon`` from an empty ledger."""
    empty = PrivacyLedger(unit="example", population=1)
    return remaining_steps(
        empty,
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        delta=delta,
        target_epsilon=target_epsilon,
        accountant=accountant,
    )


def _within_budget(
    ledger: PrivacyLedger, z: float, q: float, delta: float, target: float, accountant: AccountantName
) -> Callable[[int], bool]:
    z, q, delta = (
        accounting.check_noise_multiplier(z),
        accounting.check_sampling_rate(q),
        accounting.check_delta(delta),
    )
    accounting.check_accountant(accountant)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < math.inf:
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target!r}")
    past = ledger.dp_event()

    def fits(k: int) -> bool:
        extra = accounting.dp_event(noise_multiplier=z, sampling_rate=q, steps=k)
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
