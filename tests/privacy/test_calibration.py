"""Calibration never overshoots the target epsilon and is tight; delta warnings."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import (
    AccountingError,
    FixedSizeSampling,
    PoissonSampling,
    dp_event,
    epsilon,
    steps_event,
)
from fedmodel.privacy.calibration import MAX_NOISE_MULTIPLIER, calibrate_noise_multiplier, warn_delta


def eps(z: float, q: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    return epsilon(dp_event(noise_multiplier=z, sampling_rate=q, steps=steps), delta=delta, accountant=accountant)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    target=st.floats(0.5, 10.0),
    delta=st.floats(1e-7, 1e-3),
    q=st.floats(1e-3, 0.5),
    steps=st.integers(1, 5000),
)
def test_rdp_calibration_never_overshoots_and_is_tight(target: float, delta: float, q: float, steps: int) -> None:
    z = calibrate_noise_multiplier(target_epsilon=target, delta=delta, sampling_rate=q, steps=steps)
    assert eps(z, q, steps, delta) <= target  # exactly, not approximately
    assert eps(z * 0.99, q, steps, delta) > target


@pytest.mark.parametrize(
    ("target", "delta", "q", "steps"),
    [(3.0, 1e-5, 256 / 60000, math.ceil(60 * 60000 / 256)), (2.0, 1e-6, 0.05, 100), (1.0, 1e-5, 0.01, 1000)],
)
def test_pld_calibration_never_overshoots_and_is_tight(target: float, delta: float, q: float, steps: int) -> None:
    z = calibrate_noise_multiplier(target_epsilon=target, delta=delta, sampling_rate=q, steps=steps, accountant="pld")
    assert eps(z, q, steps, delta, "pld") <= target
    assert eps(z * 0.99, q, steps, delta, "pld") > target
    # PLD is the tighter accountant, so it needs no more noise than RDP
    assert z <= calibrate_noise_multiplier(target_epsilon=target, delta=delta, sampling_rate=q, steps=steps)


def test_mnist_target_three() -> None:
    z = calibrate_noise_multiplier(target_epsilon=3.0, delta=1e-5, sampling_rate=256 / 60000, steps=14063)
    # z = 1.1 gives 2.60 (RDP), so a bit less noise reaches 3
    assert 0.95 < z < 1.1


def test_tiny_targets_calibrate_without_numerical_failures() -> None:
    # MNIST schedule at epsilon 0.01: z in the hundreds, where dp-accounting's RDP sums cancel to round-off
    kw = {"target_epsilon": 0.01, "delta": 1e-5, "sampling_rate": 256 / 60000, "steps": 14063}
    for accountant in ("rdp", "pld"):
        z = calibrate_noise_multiplier(**kw, accountant=accountant)  # type: ignore[arg-type]
        assert 100 < z < MAX_NOISE_MULTIPLIER
        assert 0 < eps(z, 256 / 60000, 14063, 1e-5, accountant) <= 0.01


def fixed_eps(z: float, how: FixedSizeSampling, steps: int, delta: float) -> float:
    event = steps_event(dp_accounting.GaussianDpEvent(z), how, steps=steps)
    return epsilon(event, delta=delta, accountant="rdp")


@pytest.mark.parametrize(("target", "n", "m", "rounds"), [(2.0, 1000, 50, 100), (8.0, 100, 100, 30)])
def test_fixed_size_calibration_never_overshoots_and_is_tight(target: float, n: int, m: int, rounds: int) -> None:
    how = FixedSizeSampling(population=n, size=m)
    z = calibrate_noise_multiplier(target_epsilon=target, delta=1e-6, sampling=how, steps=rounds)
    assert fixed_eps(z, how, rounds, 1e-6) <= target < fixed_eps(z * 0.99, how, rounds, 1e-6)
    if n == m:  # everyone every round: a Gaussian at z / 2, i.e. twice the noise of q = 1 Poisson
        poisson = calibrate_noise_multiplier(target_epsilon=target, delta=1e-6, sampling_rate=1.0, steps=rounds)
        assert z == pytest.approx(2 * poisson, rel=2e-3)


def test_poisson_sampling_object_equals_sampling_rate() -> None:
    kw = {"target_epsilon": 2.0, "delta": 1e-6, "steps": 100}
    assert calibrate_noise_multiplier(**kw, sampling=PoissonSampling(0.05)) == calibrate_noise_multiplier(  # type: ignore[arg-type]
        **kw,
        sampling_rate=0.05,  # type: ignore[arg-type]
    )


def test_pld_refuses_fixed_size_sampling() -> None:
    with pytest.raises(AccountingError, match="pld does not support fixed-size sampling; use rdp"):
        calibrate_noise_multiplier(
            target_epsilon=1.0, delta=1e-6, sampling=FixedSizeSampling(population=10, size=2), steps=5, accountant="pld"
        )


def test_infeasible_target_raises() -> None:
    with pytest.raises(ConfigError, match=r"target_epsilon=1e-06 is out of reach.*noise_multiplier=1000"):
        calibrate_noise_multiplier(target_epsilon=1e-6, delta=1e-5, sampling_rate=1.0, steps=1000)
    assert MAX_NOISE_MULTIPLIER == 1e3


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": math.inf}, "target_epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"steps": 0}, "steps"),
        ({"accountant": "gdp"}, "gdp"),
        ({"tolerance": 0.5}, "tolerance"),
        ({"sampling": PoissonSampling(0.01)}, "exactly one of sampling_rate and sampling"),
        ({"sampling_rate": None}, "exactly one of sampling_rate and sampling"),
    ],
)
def test_bad_inputs_raise(kwargs: dict[str, object], named: str) -> None:
    base: dict[str, object] = {"target_epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.01, "steps": 100}
    with pytest.raises(ConfigError, match=named):
        calibrate_noise_multiplier(**(base | kwargs))  # type: ignore[arg-type]


def test_warn_delta() -> None:
    assert warn_delta(1e-5, 60000) is None
    message = warn_delta(1e-3, 1000, unit="client")
    assert message is not None and "delta=0.001" in message and "1/1000" in message and "client" in message
    assert warn_delta(1 / 500, 500) is not None
