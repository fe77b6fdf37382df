"""Client-level DP: hand-worked no-noise case, the stated noise std, dropouts, adaptive clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmodel.federated.client_dp import ClientDPConfig, client_dp_config, release_round
from fedmodel.privacy.accounting import FixedSizeSampling, PoissonSampling
from fedmodel.privacy.mechanism import GaussianMechanism


class ZeroNoise:
    """An injected generator whose normal draws are all 0 (the no-noise cases below)."""

    def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)


def config(z: float, clip: float, *, n: int = 10, m: int = 4, adaptive: bool = False, **kw: float) -> ClientDPConfig:
    return client_dp_config(
        noise_multiplier=z, clip=clip, num_clients=n, clients_per_round=m, sampling="poisson", adaptive=adaptive, **kw
    )


def test_no_noise_mean_is_the_clipped_sum_over_expected_clients() -> None:
    # Two replies of an expected four, clip 1: (3, 4) has norm 5 -> (0.6, 0.8); (0.3, 0) is kept.
    # Sum (0.9, 0.8) divided by 4 (expected clients, not the 2 replies) = (0.225, 0.2).
    release = release_round(
        [[np.array([3.0, 4.0])], [np.array([0.3, 0.0])]],
        config=config(0.0, 1.0),
        clip=1.0,
        shapes=[(2,)],
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(release.mean_update[0], [0.225, 0.2])
    assert release.clipped == 1 and release.replies == 2
    assert not hasattr(release, "norms")  # no per-client value is kept


@pytest.mark.parametrize("replies", [8, 3, 0])
def test_noise_std_is_z_times_clip_over_expected_clients_whatever_replies(replies: int) -> None:
    # 100,000 coordinates: the sample std is within 1.5% of z * C / m. Dropouts change the signal only, and the
    # event the ledger gets carries the z that was measured.
    cfg = config(1.2, 0.5, n=16, m=8)
    updates = [[np.zeros(100_000)] for _ in range(replies)]
    release = release_round(updates, config=cfg, clip=0.5, shapes=[(100_000,)], rng=np.random.default_rng(replies))
    measured = release.mean_update[0].std() * 8 / 0.5
    assert measured == pytest.approx(1.2, rel=0.015)
    assert release.event.noise_multiplier == 1.2
    assert release.sampling == PoissonSampling(0.5)


def test_fixed_size_sampling_divides_by_the_sample_size() -> None:
    cfg = client_dp_config(noise_multiplier=0.0, clip=10.0, num_clients=10, clients_per_round=5, sampling="fixed-size")
    assert cfg.sampling == FixedSizeSampling(population=10, size=5) and cfg.expected_clients == 5
    release = release_round([[np.ones(2)]], config=cfg, clip=10.0, shapes=[(2,)], rng=np.random.default_rng(0))
    np.testing.assert_allclose(release.mean_update[0], [0.2, 0.2])


def _count_sum(norms: list[float], *, clip: float, m: int) -> float:
    """The released (here noiseless) centred count, recovered from the next clip."""
    cfg = config(1.0, clip, n=100, m=m, adaptive=True, target_quantile=0.5, clip_lr=0.2)
    updates = [[np.array([n])] for n in norms]
    release = release_round(updates, config=cfg, clip=clip, shapes=[(1,)], rng=ZeroNoise())  # type: ignore[arg-type]
    fraction = 0.5 - math.log(release.next_clip / clip) / 0.2
    return (fraction - 0.5) * m


def test_adaptive_clipping_releases_a_centred_count_of_sensitivity_one_half() -> None:
    # Clip 1: norms 0.5 and 0.7 are below (+1/2 each), 3.0 is above (-1/2): centred sum 0.5.
    assert _count_sum([0.5, 0.7, 3.0], clip=1.0, m=20) == pytest.approx(0.5)
    # Adding or removing one client moves the released count by exactly 1/2 (uncentred: by 1).
    for extra in (0.1, 5.0):
        moved = _count_sum([0.5, 0.7, 3.0, extra], clip=1.0, m=20) - 0.5
        assert abs(moved) == pytest.approx(0.5)


def test_adaptive_clip_moves_towards_the_target_quantile() -> None:
    cfg = config(1.0, 0.1, n=200, m=100, adaptive=True, target_quantile=0.5)
    rng = np.random.default_rng(0)
    norms = rng.uniform(0, 10, size=100)  # median 5
    clip = 0.1
    for _ in range(200):
        updates = [[np.array([n])] for n in norms]
        clip = release_round(updates, config=cfg, clip=clip, shapes=[(1,)], rng=rng).next_clip
    assert 3.5 < clip < 6.5
    fixed = config(1.0, 0.1, n=200, m=100)
    assert release_round([[np.ones(1)]], config=fixed, clip=0.1, shapes=[(1,)], rng=rng).next_clip == 0.1


def test_adaptive_clipping_costs_privacy_through_the_effective_noise() -> None:
    # Andrew et al. 2021 Thm 1 with the centred count: z_eff = (z^-2 + (2 sigma_b)^-2)^(-1/2), sigma_b = m / 20.
    cfg = config(1.0, 1.0, n=40, m=20, adaptive=True)
    count = cfg.count_mechanism
    assert count is not None and count.stddev == pytest.approx(1.0) and count.clip == 0.5
    assert cfg.round_event().noise_multiplier == pytest.approx((1 + 0.25) ** -0.5)
    assert config(1.0, 1.0, n=40, m=20).round_event().noise_multiplier == 1.0


def test_the_mechanism_is_validated_once_with_the_values_named() -> None:
    with pytest.raises(ValueError, match="noise multiplier must be a finite number >= 0, got -1"):
        config(-1.0, 1.0)
    with pytest.raises(ValueError, match="clip must be a finite number > 0, got 0"):
        GaussianMechanism(noise_multiplier=1.0, clip=0)
