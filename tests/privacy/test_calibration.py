"""Calibration never overshoots the target epsilon and is tight; delta warnings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import dp_event, epsilon
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
