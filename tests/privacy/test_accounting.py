"""Accounting: epsilon equals dp-accounting's own accountants and tensorflow-privacy's figure; edge cases."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import dp_accounting
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import PLD_DISCRETIZATION, dp_event, epsilon, epsilons

# MNIST DP-SGD tutorial setting: 60,000 examples, batch 256, 60 epochs, z = 1.1, delta = 1e-5.
MNIST_Q = 256 / 60000
MNIST_STEPS = math.ceil(60 * 60000 / 256)  # 14,063
MNIST = {"noise_multiplier": 1.1, "sampling_rate": MNIST_Q, "steps": MNIST_STEPS}


def _direct(event: dp_accounting.DpEvent, delta: float, accountant: str) -> float:
    acc: dp_accounting.PrivacyAccountant
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    else:
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
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
        (2.0, 1.0, 10, 1e-5),
    ],
)
def test_epsilon_equals_dp_accounting_directly(accountant: str, z: float, q: float, steps: int, delta: float) -> None:
    event = dp_event(noise_multiplier=z, sampling_rate=q, steps=steps)
    step: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
    if q < 1:  # q = 1 is plain composition (PLD then composes Gaussians exactly, a hair tighter)
        step = dp_accounting.PoissonSampledDpEvent(q, step)
    reference = dp_accounting.SelfComposedDpEvent(step, steps)
    # RDP: the same float operations; PLD: the same distributions, composed in another order (float rounding)
    rel = 1e-12 if accountant == "rdp" else 1e-9
    assert epsilon(event, delta=delta, accountant=accountant) == pytest.approx(  # type: ignore[arg-type]
        _direct(reference, delta, accountant), rel=rel
    )


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


def test_pld_is_tighter_than_rdp_and_close_to_a_finer_grid() -> None:
    event = dp_event(**MNIST)
    rdp, pld = epsilon(event, delta=1e-5, accountant="rdp"), epsilon(event, delta=1e-5, accountant="pld")
    fine = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    fine.compose(event)
    assert pld < rdp
    # pessimistic discretisation: the coarse grid is an upper bound within 1% of the fine one
    assert fine.get_epsilon(1e-5) <= pld <= fine.get_epsilon(1e-5) * 1.01


def _gaussian_delta(eps: float, mu: float) -> float:
    """Exact delta(eps) of a Gaussian mechanism with sensitivity/std = mu (Balle & Wang 2018, Thm 8)."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2))

    return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)


def test_full_batch_is_plain_gaussian_composition() -> None:
    # q = 1: T Gaussian steps with multiplier z compose to one Gaussian with multiplier z / sqrt(T).
    z, steps, delta = 2.0, 16, 1e-5
    event = dp_event(noise_multiplier=z, sampling_rate=1.0, steps=steps)
    assert isinstance(event, dp_accounting.SelfComposedDpEvent)
    assert isinstance(event.event, dp_accounting.GaussianDpEvent)
    pld = epsilon(event, delta=delta, accountant="pld")
    mu = math.sqrt(steps) / z
    assert _gaussian_delta(pld, mu) <= delta  # an upper bound on epsilon ...
    assert _gaussian_delta(pld - 0.01, mu) > delta  # ... and a tight one
    assert epsilon(event, delta=delta, accountant="rdp") >= pld


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
