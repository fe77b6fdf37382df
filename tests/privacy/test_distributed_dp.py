"""The distributed discrete Gaussian: encoding, rounding bound, modular sum, and its privacy bound."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import FixedSizeSampling
from fedmodel.privacy.distributed_dp import ORDERS, DistributedDiscreteGaussian

SHAPES = [(30, 10), (10,)]


def _mech(**kw: object) -> DistributedDiscreteGaussian:
    values: dict[str, object] = {"clip": 1.0, "noise_multiplier": 1.0, "dim": 310, "cohort": 10, "min_survivors": 8}
    return DistributedDiscreteGaussian(**{**values, **kw})  # type: ignore[arg-type]


def _updates(n: int, rng: np.random.Generator, norm: float = 0.5) -> list[list[np.ndarray]]:
    out = []
    for _ in range(n):
        parts = [rng.normal(size=s) for s in SHAPES]
        total = math.sqrt(sum(float(np.sum(p**2)) for p in parts))
        out.append([p * norm / total for p in parts])
    return out


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


def test_the_modular_sum_decodes_to_the_sum_within_the_rounding_error() -> None:
    mech = _mech(noise_multiplier=0.0)
    rng = np.random.default_rng(0)
    updates = _updates(10, rng)
    encoded = [mech.encode(u, rotation_seed=5, rng=rng)[0] for u in updates]
    assert all(e.min() >= 0 and e.max() < mech.modulus for e in encoded)
    total = mech.decode(np.sum(encoded, axis=0) % mech.modulus, rotation_seed=5, shapes=SHAPES)
    err = np.linalg.norm(_flat(total) - sum(_flat(u) for u in updates))
    assert err <= 10 * mech.gamma * math.sqrt(mech.padded_dim)
    # the wrong rotation seed decodes to noise: the rotation is really applied
    wrong = mech.decode(np.sum(encoded, axis=0), rotation_seed=6, shapes=SHAPES)
    assert np.linalg.norm(_flat(wrong) - sum(_flat(u) for u in updates)) > 1.0


def test_updates_are_clipped_and_rounded_within_the_stated_norm_bound() -> None:
    mech = _mech(noise_multiplier=0.0, beta=math.exp(-0.5))
    rng = np.random.default_rng(1)
    big = _updates(1, rng, norm=50.0)[0]
    encoded, clipped = mech.encode(big, rotation_seed=1, rng=rng)
    assert clipped
    centred = np.where(encoded >= mech.modulus // 2, encoded - mech.modulus, encoded)
    assert np.linalg.norm(centred) <= mech.l2_bound  # what the sensitivity rests on, guaranteed by rejection
    assert mech.l2_bound < mech.clip * mech.scale + math.sqrt(mech.padded_dim)  # conditional rounding helps
    decoded = mech.decode(encoded, rotation_seed=1, shapes=SHAPES)
    assert np.linalg.norm(_flat(decoded)) == pytest.approx(1.0, abs=mech.gamma * math.sqrt(mech.padded_dim))
    _, clipped = mech.encode(_updates(1, rng, norm=0.3)[0], rotation_seed=1, rng=rng)
    assert not clipped


def test_noise_shares_sum_to_the_intended_variance() -> None:
    mech = _mech(noise_multiplier=1.5, clip=0.2)
    rng = np.random.default_rng(7)
    zeros = [np.zeros(s) for s in SHAPES]
    runs = []
    for r in range(6):
        total = np.sum([mech.encode(zeros, rotation_seed=r, rng=rng)[0] for _ in range(8)], axis=0)
        runs.append(_flat(mech.decode(total, rotation_seed=r, shapes=SHAPES)))
    noise = np.concatenate(runs)
    # 8 shares of std sigma_local each; the 7 counted shares carry z * c
    assert np.var(noise) == pytest.approx(8 * mech.local_stddev**2, rel=0.08)
    assert 7 * mech.local_stddev**2 == pytest.approx((1.5 * 0.2) ** 2)


def test_the_ledgers_gaussian_bounds_proposition_14_at_every_order() -> None:
    settings: list[dict[str, object]] = [
        {},
        {"bits": 12},
        {"noise_multiplier": 0.3, "bits": 10},
        {"noise_multiplier": 0.02, "bits": 8},
    ]
    for kw in settings:
        mech = _mech(**kw)
        curve = mech.rdp(ORDERS)
        # the ledger halves the add-or-remove multiplier for fixed-size (replace-one) cohorts
        z = mech.effective_noise_multiplier() / 2
        assert np.all(np.array(ORDERS) / (2 * z**2) >= curve * (1 - 1e-9))
        ledger = accounting.epsilon(
            accounting.steps_event(mech.event(), FixedSizeSampling(10, 10), steps=3), delta=1e-5, accountant="rdp"
        )
        assert ledger >= mech.epsilon(3, 1e-5) - 1e-9


def test_epsilon_is_never_below_the_continuous_gaussian_it_approximates() -> None:
    # DP-FedAvg's Gaussian with std z*c under replace-one adjacency (sensitivity 2c), as the ledger charges it.
    # The discrete version cannot do better; with fine rounding it is close, and the ledger's event is ~z.
    mech = _mech(noise_multiplier=1.0, bits=20)
    assert mech.effective_noise_multiplier() == pytest.approx(1.0, rel=0.01)

    def charged(event: dp_accounting.GaussianDpEvent) -> float:
        steps = accounting.steps_event(event, FixedSizeSampling(10, 10), steps=5)
        return accounting.epsilon(steps, delta=1e-5, accountant="rdp")

    continuous = charged(dp_accounting.GaussianDpEvent(1.0))
    ours = mech.epsilon(5, 1e-5)
    assert continuous <= ours <= charged(mech.event()) * (1 + 1e-9) <= continuous * 1.1
    # coarse rounding (few bits) inflates the sensitivity, so epsilon grows
    assert _mech(noise_multiplier=1.0, bits=10).epsilon(5, 1e-5) > ours


def test_fewer_counted_shares_mean_more_epsilon_and_none_means_no_privacy() -> None:
    mech = _mech()
    assert mech.epsilon(10, 1e-5, shares=3) > mech.epsilon(10, 1e-5, shares=7) > mech.epsilon(10, 1e-5, shares=9)
    assert mech.effective_noise_multiplier(shares=0) == 0.0


def test_small_local_scales_pay_the_tau_term() -> None:
    # below scale ~1 the sum of discrete Gaussians is not one discrete Gaussian: tau makes the bound larger
    fine = _mech(noise_multiplier=1.0, bits=20)
    coarse = _mech(noise_multiplier=0.02, bits=8)  # each client's scale ~0.55
    assert fine.tau() < 1e-12 < 0.1 < coarse.tau()
    z = coarse.effective_noise_multiplier()
    l2 = 2 * coarse.l2_bound / (math.sqrt(coarse.counted_shares) * coarse.local_scale)
    assert 1 / z == pytest.approx(l2 / 2 + math.sqrt(coarse.padded_dim) * coarse.tau())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="min survivors must be in \\[2, cohort=10\\]"):
        _mech(min_survivors=1)
    with pytest.raises(ConfigError, match="below 2\\^32"):
        _mech(cohort=10, bits=29)
    with pytest.raises(ConfigError, match=r"< 0\.5"):
        _mech(noise_multiplier=0.01, bits=8)
    with pytest.raises(ValueError, match="update has 3 values, the mechanism expects 310"):
        _mech().encode([np.zeros(3)], rotation_seed=0, rng=np.random.default_rng())
