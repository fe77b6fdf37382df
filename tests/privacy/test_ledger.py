"""The privacy ledger: exact step counts, merging, JSON round-trip, resume, and fail-closed budget checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import (
    AccountingError,
    FixedSizeSampling,
    PoissonSampling,
    dp_event,
    epsilon,
    steps_event,
)
from fedmodel.privacy.ledger import (
    LEDGER_FILE,
    LEDGER_VERSION,
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
    assert ledger.entries == (LedgerEntry(1.1, PoissonSampling(Q), 10_000),)


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


# -- releases, fixed-size sampling, format versions -----------------------------------------------

FIXED = FixedSizeSampling(population=1000, size=50)


def fixed_ledger() -> PrivacyLedger:
    return PrivacyLedger(unit="client", population=1000, sampling="fixed-size", delta=1e-6)


def _replace_one_rdp(event: dp_accounting.DpEvent, delta: float) -> float:
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(event)
    return acc.get_epsilon(delta)


def test_record_release_equals_record_for_poisson() -> None:
    a, b = central(), central()
    for epoch in (1, 1, 2):
        a.record(noise_multiplier=1.1, sampling_rate=Q, epoch=epoch)
        b.record_release(dp_accounting.GaussianDpEvent(1.1), PoissonSampling(Q), epoch=epoch)
    assert a.to_dict() == b.to_dict()
    assert [(e.sampling, e.count, e.epoch) for e in b.entries] == [
        (PoissonSampling(Q), 2, 1),
        (PoissonSampling(Q), 1, 2),
    ]
    assert b.release_sampling == "poisson" and b.accountants == ("rdp", "pld")


def test_fixed_size_ledger_accounts_with_the_replace_one_bound() -> None:
    ledger = fixed_ledger()
    assert ledger.adjacency is not None and ledger.adjacency.startswith("add-or-remove")  # nothing recorded yet
    for rnd in range(1, 31):
        ledger.record_release(dp_accounting.GaussianDpEvent(1.0), FIXED, epoch=rnd)
    ledger.record_release(dp_accounting.GaussianDpEvent(2.0), FIXED, count=10, epoch=31)
    assert ledger.adjacency is not None and ledger.adjacency.startswith("replace-one-client")
    assert ledger.release_sampling == "fixed-size" and ledger.accountants == ("rdp",)
    assert ledger.steps == 40 and ledger.entries[0].sampling == FIXED
    by_hand = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.SampledWithoutReplacementDpEvent(1000, 50, dp_accounting.GaussianDpEvent(z / 2)), n
            )
            for z, n in ((1.0, 30), (2.0, 10))
        ]
    )
    assert ledger.epsilon() == pytest.approx(_replace_one_rdp(by_hand, 1e-6), rel=1e-12)
    curve = ledger.epsilon_curve()
    assert [s for s, _ in curve] == [*range(1, 31), 40]
    assert curve[-1][1] == ledger.epsilon() and [e for _, e in curve] == sorted(e for _, e in curve)
    assert ledger.epsilon_curve(points=[30])[0][1] == pytest.approx(
        _replace_one_rdp(dp_accounting.SelfComposedDpEvent(by_hand.events[0].event, 30), 1e-6), rel=1e-12
    )
    with pytest.raises(AccountingError, match="pld does not support fixed-size sampling; use rdp"):
        ledger.epsilon(accountant="pld")


def test_a_ledger_cannot_mix_poisson_and_fixed_size_releases() -> None:
    ledger = fixed_ledger()
    ledger.record_release(dp_accounting.GaussianDpEvent(1.0), FIXED)
    with pytest.raises(ConfigError, match="either Poisson or fixed-size"):
        ledger.record(noise_multiplier=1.0, sampling_rate=0.05)
    poisson = PrivacyLedger(unit="client", population=1000, delta=1e-6)
    with pytest.raises(ConfigError, match="sampling='fixed-size', got sampling='poisson'"):
        poisson.record_release(dp_accounting.GaussianDpEvent(1.0), FIXED)
    with pytest.raises(ConfigError, match="GaussianDpEvent"):
        ledger.record_release(dp_accounting.LaplaceDpEvent(1.0), FIXED)  # type: ignore[arg-type]
    assert ledger.steps == 1 and poisson.steps == 0


def test_version_2_round_trip_keeps_the_sampling(tmp_path: Path) -> None:
    ledger = fixed_ledger()
    ledger.record_release(dp_accounting.GaussianDpEvent(1.0), FIXED, count=3, epoch=1)
    data = json.loads(json.dumps(ledger.to_dict()))
    assert data["version"] == LEDGER_VERSION == 2
    assert data["entries"] == [
        {
            "noise_multiplier": 1.0,
            "sampling": {"kind": "fixed-size", "population": 1000, "size": 50},
            "count": 3,
            "epoch": 1,
        }
    ]
    ledger.save(tmp_path)
    again = PrivacyLedger.load(tmp_path)
    assert again.to_dict() == ledger.to_dict() and again.entries == ledger.entries
    assert again.epsilon() == ledger.epsilon() and again.accountants == ("rdp",)
    poisson = central()
    poisson.record(noise_multiplier=1.1, sampling_rate=Q, count=4)
    assert poisson.to_dict()["entries"][0]["sampling"] == {"kind": "poisson", "rate": Q}


def test_version_1_files_still_load() -> None:
    v1 = {
        "format": "fedmodel.privacy_ledger",
        "version": 1,
        "unit": "example",
        "adjacency": "add-or-remove-one-example",
        "sampling": "shuffle",
        "population": 60000,
        "steps_per_epoch": 235,
        "delta": 1e-5,
        "notes": ["clip 1.0"],
        "steps": 9,
        "entries": [
            {"noise_multiplier": 1.1, "sampling_rate": Q, "count": 7, "epoch": 1},
            {"noise_multiplier": 1.3, "sampling_rate": Q, "count": 2, "epoch": 2},
        ],
    }
    ledger = PrivacyLedger.from_dict(v1)
    same = central(sampling="shuffle", notes=["clip 1.0"])
    same.record(noise_multiplier=1.1, sampling_rate=Q, count=7, epoch=1)
    same.record(noise_multiplier=1.3, sampling_rate=Q, count=2, epoch=2)
    assert ledger.entries == same.entries and ledger.epsilon() == same.epsilon()
    assert ledger.to_dict()["version"] == 2  # saved in the current format


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ([{"noise_multiplier": 1.0, "sampling": {"kind": "shuffle"}, "count": 1}], "'shuffle'"),
        ([{"noise_multiplier": 1.0, "sampling": {"kind": "poisson", "rate": 2.0}, "count": 1}], "got 2.0"),
        (
            [{"noise_multiplier": 1.0, "sampling": {"kind": "fixed-size", "population": 5, "size": 9}, "count": 1}],
            "size=9",
        ),
        ([{"noise_multiplier": 1.0, "sampling_rate": 0.1, "count": 1}], "'sampling'"),  # a version-1 entry
        ([{"noise_multiplier": 1.0, "sampling": 0.1, "count": 1}], "must be an object, got 0.1"),
        ({"noise_multiplier": 1.0}, "entries must be a list"),
        (
            [
                {"noise_multiplier": 1.0, "sampling": {"kind": "poisson", "rate": 0.1}, "count": 1},
                {"noise_multiplier": 1.0, "sampling": {"kind": "fixed-size", "population": 5, "size": 1}, "count": 1},
            ],
            "either Poisson or fixed-size",
        ),
    ],
)
def test_malformed_version_2_entries_raise(entries: object, named: str) -> None:
    data = {
        "format": "fedmodel.privacy_ledger",
        "version": 2,
        "unit": "client",
        "sampling": "fixed-size",
        "population": 5,
        "entries": entries,
    }
    with pytest.raises(ConfigError, match=named):
        PrivacyLedger.from_dict(data)


def test_remaining_steps_with_fixed_size_sampling_is_exactly_the_budget() -> None:
    ledger = fixed_ledger()
    mech = dp_accounting.GaussianDpEvent(3.0)
    ledger.record_release(mech, FIXED, count=20)
    kw = {"event": mech, "sampling": FIXED, "delta": 1e-6, "target_epsilon": 2.0}
    k = remaining_steps(ledger, **kw)  # type: ignore[arg-type]
    assert k > 0

    def eps(n: int) -> float:
        return epsilon(steps_event(mech, FIXED, steps=n), delta=1e-6, accountant="rdp")

    assert eps(20 + k) <= 2.0 < eps(21 + k)
    within = PrivacyLedger.from_dict(ledger.to_dict())
    within.record_release(mech, FIXED, count=k)
    assert not would_exceed(ledger, **kw) and would_exceed(within, **kw)  # type: ignore[arg-type]
    assert steps_within_budget(**kw, accountant="rdp") == 20 + k  # type: ignore[arg-type]
    with pytest.raises(AccountingError, match="pld does not support fixed-size"):
        remaining_steps(ledger, **kw, accountant="pld")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"noise_multiplier": 1.0}, "exactly one of sampling_rate and sampling"),
        ({"sampling_rate": 0.1}, "exactly one of noise_multiplier and event"),
        (
            {"noise_multiplier": 1.0, "event": dp_accounting.GaussianDpEvent(1.0), "sampling_rate": 0.1},
            "exactly one of noise_multiplier and event",
        ),
        (
            {"noise_multiplier": 1.0, "sampling_rate": 0.1, "sampling": PoissonSampling(0.1)},
            "exactly one of sampling_rate",
        ),
        ({"event": dp_accounting.GaussianDpEvent(-1.0), "sampling": PoissonSampling(0.1)}, "noise_multiplier must be"),
    ],
)
def test_budget_checks_need_one_mechanism_and_one_sampling(kw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        remaining_steps(central(), delta=1e-5, target_epsilon=1.0, **kw)  # type: ignore[arg-type]


def test_tree_releases_round_trip_compose_per_tree_and_do_not_mix() -> None:
    from fedmodel.privacy.accounting import TreeAggregation

    ledger = PrivacyLedger(unit="client", population=50, sampling="tree", delta=1e-5)
    for rnd, tree in enumerate([0, 0, 0, 0, 0, 1, 1], start=1):
        ledger.record_release(dp_accounting.GaussianDpEvent(2.0), TreeAggregation(tree), epoch=rnd)
    back = PrivacyLedger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert back.entries == ledger.entries and back.epsilon() == ledger.epsilon()
    events = ledger.dp_event().events
    assert [e.step_counts for e in events] == [5, 2]  # one event per tree, its rounds together
    with pytest.raises(ConfigError, match="not a mix"):
        ledger.record_release(dp_accounting.GaussianDpEvent(2.0), PoissonSampling(0.1))
    with pytest.raises(ConfigError, match="sampling='tree'"):
        PrivacyLedger(unit="client", population=50).record_release(
            dp_accounting.GaussianDpEvent(2.0), TreeAggregation(0)
        )
    with pytest.raises(ConfigError, match="tree must be an integer >= 0"):
        TreeAggregation(-1)
