"""The privacy ledger: exact step counts, merging, JSON round-trip, resume, and fail-closed budget checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import dp_event, epsilon
from fedmodel.privacy.ledger import (
    LEDGER_FILE,
    LedgerEntry,
    PrivacyLedger,
    remaining_steps,
    steps_within_budget,
    would_exceed,
)

Q = 256 / 60000


def central(**kw: object) -> PrivacyLedger:
    return PrivacyLedger(unit="example", population=60000, steps_per_epoch=235, delta=1e-5, **kw)  # type: ignore[arg-type]


def test_many_records_merge_into_one_entry_with_exact_steps() -> None:
    ledger = central()
    for _ in range(10_000):
        ledger.record(noise_multiplier=1.1, sampling_rate=Q)
    assert ledger.steps == 10_000
    assert ledger.entries == (LedgerEntry(1.1, Q, 10_000),)


def test_changes_of_noise_rate_or_epoch_start_new_entries() -> None:
    ledger = central()
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=3, epoch=1)
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=2, epoch=1)
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=4, epoch=2)
    ledger.record(noise_multiplier=1.5, sampling_rate=Q, count=1, epoch=2)
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=1, epoch=2)
    assert [(e.noise_multiplier, e.count, e.epoch) for e in ledger.entries] == [
        (1.1, 5, 1),
        (1.1, 4, 2),
        (1.5, 1, 2),
        (1.1, 1, 2),
    ]
    assert ledger.steps == 11
    assert ledger.boundaries() == [(1, 5), (2, 11)]


def test_epsilon_is_that_of_the_composed_events() -> None:
    ledger = central()
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=5000)
    ledger.record(noise_multiplier=0.9, sampling_rate=2 * Q, count=1000)
    event = ledger.dp_event()
    assert isinstance(event, dp_accounting.ComposedDpEvent)
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(event)
    assert ledger.epsilon(accountant="rdp") == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-12)
    pld = dp_accounting.pld.PLDAccountant()  # default interval, as ours
    pld.compose(event)
    assert ledger.epsilon(accountant="pld") == pytest.approx(pld.get_epsilon(1e-5), rel=1e-9)  # composition order
    one_entry = epsilon(dp_event(noise_multiplier=1.1, sampling_rate=Q, steps=5000), delta=1e-5, accountant="pld")
    assert ledger.epsilon(1e-5, "pld") > one_entry


def test_epsilon_curve_rises_and_ends_at_the_ledger_epsilon() -> None:
    ledger = central()
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=235 * 4 + 100)
    curve = ledger.epsilon_curve()
    assert [s for s, _ in curve] == [235, 470, 705, 940, 1040]
    eps = [e for _, e in curve]
    assert eps == sorted(eps)
    assert eps[-1] == ledger.epsilon()
    chosen = ledger.epsilon_curve(points=[10, 1040])
    assert chosen[1] == curve[-1]
    assert chosen[0][0] == 10 and 0 < chosen[0][1] < curve[0][1]


def test_federated_ledger_has_one_boundary_per_round() -> None:
    ledger = PrivacyLedger(unit="client", population=1000, delta=1e-6)
    for _ in range(5):
        ledger.record(noise_multiplier=1.0, sampling_rate=0.05)
    assert ledger.adjacency is not None and "client" in ledger.adjacency
    assert ledger.boundaries() == [(k, k) for k in range(1, 6)]


def test_json_round_trip_and_atomic_save(tmp_path: Path) -> None:
    ledger = central(sampling="shuffle", notes=["clip norm 1.0"])
    ledger.record(noise_multiplier=1.1, sampling_rate=Q, count=7, epoch=1)
    ledger.record(noise_multiplier=1.3, sampling_rate=Q, count=2, epoch=2)
    data = json.loads(json.dumps(ledger.to_dict()))
    again = PrivacyLedger.from_dict(data)
    assert again.to_dict() == ledger.to_dict()
    assert again.entries == ledger.entries
    path = ledger.save(tmp_path)
    assert path == tmp_path / LEDGER_FILE
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER_FILE]  # no temp file left behind
    loaded = PrivacyLedger.load(tmp_path)
    assert loaded.to_dict() == ledger.to_dict()
    assert loaded.epsilon() == ledger.epsilon()


def test_resume_equals_recording_all_at_once(tmp_path: Path) -> None:
    whole, first = central(), central()
    for step in range(1000):
        whole.record(noise_multiplier=1.1, sampling_rate=Q, epoch=step // 235 + 1)
        if step < 600:
            first.record(noise_multiplier=1.1, sampling_rate=Q, epoch=step // 235 + 1)
    first.save(tmp_path / "ckpt.json")
    resumed = PrivacyLedger.load(tmp_path / "ckpt.json")
    for step in range(600, 1000):
        resumed.record(noise_multiplier=1.1, sampling_rate=Q, epoch=step // 235 + 1)
    assert resumed.to_dict() == whole.to_dict()
    assert resumed.epsilon(accountant="pld") == whole.epsilon(accountant="pld")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"format": "other"}, "format"),
        ({"format": "fedmodel.privacy_ledger", "version": 99}, "version"),
        (
            {
                "format": "fedmodel.privacy_ledger",
                "version": 1,
                "unit": "user",
                "population": 3,
                "entries": [],
            },
            "user",
        ),
    ],
)
def test_malformed_ledgers_raise(data: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        PrivacyLedger.from_dict(data)


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "nope.json")):
        PrivacyLedger.load(tmp_path / "nope.json")


def test_steps_mismatch_is_detected() -> None:
    ledger = central()
    ledger.record(noise_multiplier=1.0, sampling_rate=Q, count=3)
    data = ledger.to_dict() | {"steps": 4}
    with pytest.raises(ConfigError, match="steps=4"):
        PrivacyLedger.from_dict(data)


def test_bad_records_raise_before_changing_the_ledger() -> None:
    ledger = central()
    ledger.record(noise_multiplier=1.0, sampling_rate=Q)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        ledger.record(noise_multiplier=-1.0, sampling_rate=Q)
    with pytest.raises(ConfigError, match="count"):
        ledger.record(noise_multiplier=1.0, sampling_rate=Q, count=0)
    assert ledger.steps == 1


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_remaining_steps_is_exactly_the_budget(accountant: str) -> None:
    ledger = PrivacyLedger(unit="client", population=1000, delta=1e-6)
    ledger.record(noise_multiplier=1.0, sampling_rate=0.05, count=20)
    kw = {"noise_multiplier": 1.2, "sampling_rate": 0.05, "delta": 1e-6, "target_epsilon": 4.0}
    k = remaining_steps(ledger, **kw, accountant=accountant)  # type: ignore[arg-type]
    assert k > 0
    within, over = PrivacyLedger.from_dict(ledger.to_dict()), PrivacyLedger.from_dict(ledger.to_dict())
    within.record(noise_multiplier=1.2, sampling_rate=0.05, count=k)
    over.record(noise_multiplier=1.2, sampling_rate=0.05, count=k + 1)
    assert within.epsilon(accountant=accountant) <= 4.0 < over.epsilon(accountant=accountant)  # type: ignore[arg-type]
    assert not would_exceed(ledger, **kw, accountant=accountant)  # type: ignore[arg-type]
    assert would_exceed(within, **kw, accountant=accountant)  # type: ignore[arg-type]


def test_remaining_steps_for_a_long_central_run_is_fast_and_consistent() -> None:
    # MNIST: z = 1.1 fits 14,063 steps under epsilon 2.6 (RDP) but not under 2.5
    budget = steps_within_budget(
        noise_multiplier=1.1, sampling_rate=Q, delta=1e-5, target_epsilon=2.6, accountant="rdp"
    )
    assert budget >= 14063
    assert (
        steps_within_budget(noise_multiplier=1.1, sampling_rate=Q, delta=1e-5, target_epsilon=2.5, accountant="rdp")
        < 14063
    )


def test_would_exceed_every_step_of_a_long_run_stops_at_the_budget() -> None:
    ledger = central()
    kw = {"noise_multiplier": 1.1, "sampling_rate": Q, "delta": 1e-5, "target_epsilon": 1.0}
    ran = 0
    while not would_exceed(ledger, **kw):  # type: ignore[arg-type]
        ledger.record(noise_multiplier=1.1, sampling_rate=Q)
        ran += 1
    assert ran == steps_within_budget(**kw, accountant="rdp")  # type: ignore[arg-type]
    assert ledger.epsilon() <= 1.0


def test_zero_noise_has_no_remaining_steps() -> None:
    ledger = central()
    assert (
        remaining_steps(
            ledger, noise_multiplier=0.0, sampling_rate=Q, delta=1e-5, target_epsilon=10.0, accountant="rdp"
        )
        == 0
    )
    ledger.record(noise_multiplier=0.0, sampling_rate=Q)
    assert ledger.epsilon() == math.inf


def test_budget_checks_validate_the_target() -> None:
    with pytest.raises(ConfigError, match="target_epsilon"):
        remaining_steps(central(), noise_multiplier=1.0, sampling_rate=Q, delta=1e-5, target_epsilon=-1.0)
