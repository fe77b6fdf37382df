"""Accounting: epsilon equals dp-accounting's own accountants and tensorflow-privacy's figure; edge cases."""

from __future__ import annotations

import importlib.util
import inspect
import math
from pathlib import Path
from types import ModuleType

import dp_accounting
import numpy as np
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import (
    PLD_DISCRETIZATION,
    AccountingError,
    FixedSizeSampling,
    PoissonSampling,
    accountants_for,
    dp_event,
    epsilon,
    epsilons,
    gaussian_epsilon,
    sampled_event,
    steps_event,
)

# MNIST DP-SGD tutorial setting: 60,000 examples, batch 256, 60 epochs, z = 1.1, delta = 1e-5.
MNIST_Q = 256 / 60000
MNIST_STEPS = math.ceil(60 * 60000 / 256)  # 14,063
MNIST = {"noise_multiplier": 1.1, "sampling_rate": MNIST_Q, "steps": MNIST_STEPS}


def _direct(event: dp_accounting.DpEvent, delta: float, accountant: str) -> float:
    """dp-accounting's own accountant with its defaults (default orders; default PLD interval 1e-4)."""
    acc: dp_accounting.PrivacyAccountant
    acc = dp_accounting.rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
    acc.compose(event)
    return acc.get_epsilon(delta)


def _tf_privacy_lib() -> ModuleType:
    """tensorflow-privacy's compute_dp_sgd_privacy_lib, loaded from its file (the package imports TF)."""
    spec = importlib.util.find_spec("tensorflow_privacy")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "privacy" / "analysis" / "compute_dp_sgd_privacy_lib.py"
    lib_spec = importlib.util.spec_from_file_location("_tfp_compute_dp_sgd_privacy_lib", path)
    assert lib_spec is not None and lib_spec.loader is not None
    module = importlib.util.module_from_spec(lib_spec)
    lib_spec.loader.exec_module(module)
    return module


def test_mnist_steps_convention() -> None:
    assert MNIST_STEPS == 14063


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize(
    ("z", "q", "steps", "delta"),
    [
        (1.1, MNIST_Q, MNIST_STEPS, 1e-5),
        (1.0, 0.05, 100, 1e-6),
        (0.7, 0.01, 1000, 1e-5),
        (1.5, 0.001, 1000, 1e-5),  # a 1e-3 grid overstates this PLD epsilon by about 15%
    ],
)
def test_epsilon_equals_dp_accounting_directly(accountant: str, z: float, q: float, steps: int, delta: float) -> None:
    event = dp_event(noise_multiplier=z, sampling_rate=q, steps=steps)
    reference = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps
    )
    # RDP: the same float operations; PLD: the same distributions, composed in another order (float rounding)
    rel = 1e-12 if accountant == "rdp" else 1e-9
    assert epsilon(event, delta=delta, accountant=accountant) == pytest.approx(  # type: ignore[arg-type]
        _direct(reference, delta, accountant), rel=rel
    )


def test_pld_grid_is_never_coarser_than_dp_accounting_default() -> None:
    default = inspect.signature(dp_accounting.pld.PLDAccountant).parameters["value_discretization_interval"].default
    assert PLD_DISCRETIZATION <= default == 1e-4


def test_pld_of_a_composed_ledger_like_event_equals_dp_accounting() -> None:
    event = dp_accounting.ComposedDpEvent(
        [
            dp_event(noise_multiplier=1.1, sampling_rate=MNIST_Q, steps=2000),
            dp_event(noise_multiplier=0.9, sampling_rate=2 * MNIST_Q, steps=500),
            dp_event(noise_multiplier=2.0, sampling_rate=0.01, steps=300),
        ]
    )
    assert epsilon(event, delta=1e-5, accountant="pld") == pytest.approx(_direct(event, 1e-5, "pld"), rel=1e-9)


def test_mnist_matches_tensorflow_privacy() -> None:
    lib = _tf_privacy_lib()
    ours = epsilon(dp_event(**MNIST), delta=1e-5, accountant="rdp")
    # Same Poisson-subsampled Gaussian, add-or-remove adjacency, no microbatch sensitivity doubling.
    theirs = lib._compute_dp_sgd_example_privacy(
        num_epochs=60,
        noise_multiplier=1.1,
        example_delta=1e-5,
        used_microbatching=False,
        poisson_subsampling_probability=MNIST_Q,
    )
    assert ours == pytest.approx(theirs, rel=1e-12)
    # The deprecated helper uses its own, coarser RDP orders: a slightly larger epsilon.
    legacy, _order = lib.compute_dp_sgd_privacy(60000, 256, 1.1, 60, 1e-5)
    assert ours <= legacy <= ours * 1.01


def test_mnist_tutorial_figure_comes_from_the_classic_rdp_conversion() -> None:
    # The tutorial's "epsilon about 3.0" used eps = min_a rdp(a) + log(1/delta)/(a-1) (Mironov 2017);
    # dp-accounting now applies the tighter conversion of Canonne et al. 2020, hence about 2.6.
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_event(**MNIST))
    classic = min(r + math.log(1 / 1e-5) / (a - 1) for a, r in zip(acc.orders, acc.rdp, strict=True))
    assert classic == pytest.approx(3.0, abs=0.02)
    assert epsilon(dp_event(**MNIST), delta=1e-5, accountant="rdp") < classic


def test_pld_is_tighter_than_rdp_and_the_coarse_grid_is_looser() -> None:
    event = dp_event(**MNIST)
    rdp, pld = epsilon(event, delta=1e-5, accountant="rdp"), epsilon(event, delta=1e-5, accountant="pld")
    coarse = accounting.pld_epsilon(event, delta=1e-5, value_discretization_interval=1e-3)
    assert pld < rdp
    # pessimistic discretisation: the coarser grid (the old default) is a looser upper bound
    assert pld < coarse <= pld * 1.01


def _gaussian_delta(eps: float, mu: float) -> float:
    """Exact delta(eps) of a Gaussian mechanism with sensitivity/std = mu (Balle & Wang 2018, Thm 8), 60 digits."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(60):
        e, m = mp.mpf(eps), mp.mpf(mu)
        return float(mp.ncdf(-e / m + m / 2) - mp.exp(e) * mp.ncdf(-e / m - m / 2))


def test_full_batch_is_plain_gaussian_composition_in_closed_form() -> None:
    # q = 1: T Gaussian steps with multiplier z compose to one Gaussian with multiplier z / sqrt(T).
    z, steps, delta = 2.0, 16, 1e-5
    event = dp_event(noise_multiplier=z, sampling_rate=1.0, steps=steps)
    assert isinstance(event, dp_accounting.SelfComposedDpEvent)
    assert isinstance(event.event, dp_accounting.GaussianDpEvent)
    pld = epsilon(event, delta=delta, accountant="pld")
    mu = math.sqrt(steps) / z
    assert _gaussian_delta(pld, mu) <= delta  # an upper bound on epsilon ...
    assert _gaussian_delta(pld * (1 - 1e-9), mu) > delta  # ... and exact, not discretised
    assert epsilon(event, delta=delta, accountant="rdp") >= pld


@pytest.mark.parametrize(("z", "steps", "delta"), [(2.0, 16, 1e-5), (3.0, 1, 1e-5), (5.0, 1000, 1e-5)])
def test_closed_form_gaussian_is_at_most_dp_accounting_pld(z: float, steps: int, delta: float) -> None:
    event = dp_event(noise_multiplier=z, sampling_rate=1.0, steps=steps)
    ours, theirs = epsilon(event, delta=delta, accountant="pld"), _direct(event, delta, "pld")
    # dp-accounting discretises pessimistically: never below the exact value, and close to it
    assert theirs * (1 - 1e-6) <= ours <= theirs * (1 + 1e-9)


def test_cross_silo_low_noise_is_exact_and_handles_huge_epsilon() -> None:
    # q = 1, z = 0.5, 1000 rounds: one Gaussian with s = 0.5 / sqrt(1000) (dp-accounting's PLD takes minutes)
    s = 0.5 / math.sqrt(1000)
    eps = epsilon(dp_event(noise_multiplier=0.5, sampling_rate=1.0, steps=1000), delta=1e-5, accountant="pld")
    assert eps == gaussian_epsilon(noise_multiplier=s, delta=1e-5)
    assert _gaussian_delta(eps, 1 / s) <= 1e-5 < _gaussian_delta(eps * (1 - 1e-9), 1 / s)
    # Gaussian steps of different noise compose to one Gaussian: 1/s^2 = sum count / z^2
    mixed = dp_accounting.ComposedDpEvent(
        [
            dp_event(noise_multiplier=1.0, sampling_rate=1.0, steps=3),
            dp_event(noise_multiplier=2.0, sampling_rate=1.0, steps=5),
        ]
    )
    assert epsilon(mixed, delta=1e-6, accountant="pld") == gaussian_epsilon(
        noise_multiplier=(3 / 1.0 + 5 / 4.0) ** -0.5, delta=1e-6
    )
    assert gaussian_epsilon(noise_multiplier=1e6, delta=1e-5) == 0.0  # delta(0) = 2 Phi(1 / (2 s)) - 1 = 4e-7
    # s -> 0: the privacy loss is N(1/(2 s^2), 1/s^2), whose median is the epsilon at delta = 1/2
    assert gaussian_epsilon(noise_multiplier=1e-9, delta=0.5) == pytest.approx(0.5e18, rel=1e-6)


def test_mixed_subsampled_and_full_steps_equal_dp_accounting() -> None:
    event = dp_accounting.ComposedDpEvent(
        [
            dp_event(noise_multiplier=1.0, sampling_rate=0.05, steps=50),
            dp_event(noise_multiplier=8.0, sampling_rate=1.0, steps=4),
        ]
    )
    # the full steps become one Gaussian PLD (as PLDAccountant builds it), composed with the subsampled ones
    assert epsilon(event, delta=1e-6, accountant="pld") == pytest.approx(_direct(event, 1e-6, "pld"), rel=1e-9)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_zero_noise_is_infinite_and_zero_steps_is_zero(accountant: str) -> None:
    assert epsilon(dp_event(noise_multiplier=0.0, sampling_rate=0.1, steps=5), delta=1e-5, accountant=accountant) == (  # type: ignore[arg-type]
        math.inf
    )
    assert epsilon(dp_event(noise_multiplier=1.0, sampling_rate=0.1, steps=0), delta=1e-5, accountant=accountant) == 0  # type: ignore[arg-type]


def test_epsilons_returns_the_accountants_asked_for() -> None:
    event = dp_event(noise_multiplier=1.0, sampling_rate=0.05, steps=100)
    both = epsilons(event, delta=1e-6)
    assert list(both) == ["rdp", "pld"]
    assert epsilons(event, delta=1e-6, accountants=("pld",)) == {"pld": both["pld"]}


def test_rdp_vector_of_composed_events_matches_the_accountant() -> None:
    events = [
        dp_event(noise_multiplier=1.0, sampling_rate=0.01, steps=300),
        dp_event(noise_multiplier=2.0, sampling_rate=0.02, steps=200),
        dp_accounting.GaussianDpEvent(5.0),
    ]
    composed = dp_accounting.ComposedDpEvent(events)
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(composed)
    assert accounting.rdp_vector(composed) == pytest.approx(acc.rdp, rel=1e-12)
    assert epsilon(composed, delta=1e-5, accountant="rdp") == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"noise_multiplier": -1.0, "sampling_rate": 0.1, "steps": 1}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "sampling_rate": 0.0, "steps": 1}, "sampling_rate"),
        ({"noise_multiplier": 1.0, "sampling_rate": 1.5, "steps": 1}, "sampling_rate"),
        ({"noise_multiplier": 1.0, "sampling_rate": 0.1, "steps": -1}, "steps"),
        ({"noise_multiplier": 1.0, "sampling_rate": 0.1, "steps": 2.5}, "steps"),
    ],
)
def test_bad_event_inputs_raise_config_error(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        dp_event(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, 2.0])
def test_bad_delta_raises(delta: float) -> None:
    with pytest.raises(ConfigError, match=r"delta must be in \(0, 1\)"):
        epsilon(dp_event(noise_multiplier=1.0, sampling_rate=0.1, steps=1), delta=delta, accountant="rdp")


def test_unknown_accountant_raises() -> None:
    with pytest.raises(ConfigError, match="'prv'"):
        epsilon(dp_event(noise_multiplier=1.0, sampling_rate=0.1, steps=1), delta=1e-5, accountant="prv")  # type: ignore[arg-type]


# -- rdp round-off --------------------------------------------------------------------------------


def _exact_rdp(q: float, z: float, order: int) -> float:
    """RDP of one Poisson-subsampled Gaussian step at an integer order, as a 60-digit binomial sum."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(60):
        qq, zz = mp.mpf(q), mp.mpf(z)
        a = sum(
            mp.binomial(order, i) * qq**i * (1 - qq) ** (order - i) * mp.exp((i * i - i) / (2 * zz**2))
            for i in range(order + 1)
        )
        return float(mp.log(a) / (order - 1))


@pytest.mark.parametrize(("z", "q"), [(10.0, 1e-6), (50.0, 1e-5), (1.5, 1e-5), (1.1, MNIST_Q)])
def test_per_step_rdp_integer_orders_are_exact(z: float, q: float) -> None:
    values = accounting.per_step_rdp(noise_multiplier=z, sampling_rate=q)
    for order in (2, 3, 11, 32, 256):
        k = accounting.RDP_ORDERS.index(float(order))
        assert values[k] == pytest.approx(_exact_rdp(q, z, order), rel=1e-9)
    assert np.all(values > 0) and np.all(np.diff(values) >= 0)  # RDP grows with the order


def test_rdp_never_reports_zero_from_round_off() -> None:
    # dp-accounting's fractional orders cancel to 0 here (orders 1.2-1.4) and its conversion then claims
    # (0, delta); the composed privacy loss is about N(5e-10, (3.2e-5)^2), so delta(0) is about 1.3e-5 > 1e-5
    z, q, steps, delta = 10.0, 1e-6, 100_000, 1e-5
    event = dp_event(noise_multiplier=z, sampling_rate=q, steps=steps)
    assert _direct(event, delta, "rdp") == 0.0  # the defect being guarded against
    ours = epsilon(event, delta=delta, accountant="rdp")
    # a sound reference: exact RDP at the integer orders, the same conversion
    integer = [a for a in accounting.RDP_ORDERS if a.is_integer()]
    exact = [steps * _exact_rdp(q, z, int(a)) for a in integer]
    reference, _ = dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon(integer, exact, delta)
    assert 0 < ours <= reference * (1 + 1e-9)
    assert 0 < epsilon(event, delta=delta, accountant="pld") <= ours  # PLD, the tighter one, agrees it is > 0


def test_rdp_round_off_below_zero_no_longer_raises() -> None:
    # dp-accounting raises "Renyi divergence cannot be negative" here (order 1.1 rounds to -1e-16 per step)
    event = dp_event(noise_multiplier=50.0, sampling_rate=1e-6, steps=1000)
    with pytest.raises(ValueError, match="cannot be negative"):
        _direct(event, 1e-5, "rdp")
    integer = [a for a in accounting.RDP_ORDERS if a.is_integer()]
    exact = [1000 * _exact_rdp(1e-6, 50.0, int(a)) for a in integer]
    reference, _ = dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon(integer, exact, 1e-5)
    # exact RDP at order 2 is 4e-13 < delta^2: the KL route proves (0, delta) honestly here
    assert epsilon(event, delta=1e-5, accountant="rdp") == reference == 0


# -- failures -------------------------------------------------------------------------------------


def test_numerical_failures_inside_dp_accounting_become_accounting_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("Renyi divergence cannot be negative.\nFound -1e-15.")

    monkeypatch.setattr(dp_accounting.rdp.rdp_privacy_accountant, "compute_epsilon", broken)
    event = dp_event(noise_multiplier=1.0, sampling_rate=0.01, steps=10)
    with pytest.raises(
        AccountingError, match=r"rdp accountant.*cannot be negative\. Found -1e-15.*try the pld"
    ) as info:
        epsilon(event, delta=1e-5, accountant="rdp")
    assert "\n" not in str(info.value) and isinstance(info.value, ConfigError)
    monkeypatch.setattr(accounting.privacy_loss_distribution, "from_gaussian_mechanism", broken)
    fresh = dp_event(noise_multiplier=1.2345, sampling_rate=0.0123, steps=10)  # not in the PLD cache
    with pytest.raises(AccountingError, match=r"pld accountant failed on 10 x Poisson\(q=0\.0123.*try the rdp"):
        epsilon(fresh, delta=1e-5, accountant="pld")


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_unsupported_events_become_accounting_errors(accountant: str) -> None:
    with pytest.raises(AccountingError, match="does not support"):
        epsilon(dp_accounting.UnsupportedDpEvent(), delta=1e-5, accountant=accountant)  # type: ignore[arg-type]


# -- sampling -------------------------------------------------------------------------------------


def test_poisson_sampled_event() -> None:
    mech = dp_accounting.GaussianDpEvent(1.1)
    assert sampled_event(mech, PoissonSampling(0.01)) == dp_accounting.PoissonSampledDpEvent(0.01, mech)
    assert sampled_event(mech, PoissonSampling(1.0)) == mech
    assert steps_event(mech, PoissonSampling(0.01), steps=7) == dp_event(
        noise_multiplier=1.1, sampling_rate=0.01, steps=7
    )


def _replace_one_rdp(event: dp_accounting.DpEvent, delta: float) -> float:
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(event)
    return acc.get_epsilon(delta)


def test_fixed_size_event_is_sampling_without_replacement_at_half_the_multiplier() -> None:
    z, n, m, rounds = 1.0, 1000, 50, 200
    event = steps_event(dp_accounting.GaussianDpEvent(z), FixedSizeSampling(population=n, size=m), steps=rounds)
    # replace-one adjacency: the sum of records clipped to C moves by up to 2C, so z / 2 per unit of sensitivity
    by_hand = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(n, m, dp_accounting.GaussianDpEvent(z / 2)), rounds
    )
    assert event == by_hand
    assert epsilon(event, delta=1e-6, accountant="rdp") == pytest.approx(_replace_one_rdp(by_hand, 1e-6), rel=1e-12)
    # a broken z (not halved) would give a much smaller epsilon
    unhalved = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(n, m, dp_accounting.GaussianDpEvent(z)), rounds
    )
    assert epsilon(event, delta=1e-6, accountant="rdp") > 1.5 * _replace_one_rdp(unhalved, 1e-6)


def test_fixed_size_of_everyone_is_a_gaussian_with_half_the_multiplier() -> None:
    z, n, rounds = 3.0, 40, 25
    event = steps_event(dp_accounting.GaussianDpEvent(z), FixedSizeSampling(population=n, size=n), steps=rounds)
    gaussian = dp_event(noise_multiplier=z / 2, sampling_rate=1.0, steps=rounds)
    assert epsilon(event, delta=1e-5, accountant="rdp") == pytest.approx(
        epsilon(gaussian, delta=1e-5, accountant="rdp"), rel=1e-12
    )


def test_pld_refuses_fixed_size_and_accountants_for_says_so() -> None:
    event = steps_event(dp_accounting.GaussianDpEvent(1.0), FixedSizeSampling(population=100, size=10), steps=5)
    with pytest.raises(AccountingError, match="pld does not support fixed-size sampling; use rdp"):
        epsilon(event, delta=1e-5, accountant="pld")
    assert accountants_for(event) == ("rdp",)
    assert accountants_for(dp_accounting.ComposedDpEvent([dp_accounting.NoOpDpEvent(), event])) == ("rdp",)
    assert accountants_for(dp_event(noise_multiplier=1.0, sampling_rate=0.1, steps=5)) == ("rdp", "pld")
    with pytest.raises(AccountingError, match="cannot mix fixed-size"):
        epsilon(
            dp_accounting.ComposedDpEvent([event, dp_event(noise_multiplier=1.0, sampling_rate=0.1, steps=5)]),
            delta=1e-5,
            accountant="rdp",
        )


def test_fixed_size_zero_noise_is_infinite() -> None:
    event = steps_event(dp_accounting.GaussianDpEvent(0.0), FixedSizeSampling(population=100, size=10), steps=5)
    assert epsilon(event, delta=1e-5, accountant="rdp") == math.inf


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: PoissonSampling(0.0), "rate must be in \\(0, 1\\], got 0.0"),
        (lambda: PoissonSampling(1.5), "got 1.5"),
        (lambda: PoissonSampling(True), "got True"),
        (lambda: FixedSizeSampling(population=10, size=11), "size=11 > population=10"),
        (lambda: FixedSizeSampling(population=10, size=0), "size must be an integer >= 1, got 0"),
        (lambda: FixedSizeSampling(population=2.5, size=1), "population must be an integer >= 1, got 2.5"),
        (
            lambda: sampled_event(dp_accounting.GaussianDpEvent(1.0), 0.5),
            "PoissonSampling, FixedSizeSampling or TreeAggregation, got 0.5",
        ),
        (lambda: sampled_event(dp_accounting.LaplaceDpEvent(1.0), PoissonSampling(0.5)), "GaussianDpEvent"),
    ],
)
def test_bad_sampling_raises_config_error(make: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        make()  # type: ignore[operator]


def test_pld_refuses_a_grid_too_large_for_memory_in_one_line() -> None:
    # z = 0.01 at interval 1e-4 needs ~1.7e7 points per step: minutes and gigabytes; refused at once.
    from fedmodel.privacy.accounting import AccountingError, dp_event, epsilon

    event = dp_event(noise_multiplier=0.01, sampling_rate=0.5, steps=3)
    with pytest.raises(AccountingError, match="use the rdp accountant"):
        epsilon(event, delta=1e-3, accountant="pld")
    assert epsilon(event, delta=1e-3, accountant="rdp") > 0
