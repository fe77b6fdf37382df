"""Client-level DP: hand-worked no-noise case, the stated noise std, dropouts, adaptive clipping."""

from __future__ import annotations

import numpy as np
import pytest

from fedmodel.federated.client_dp import ClientDPConfig, next_clip, noisy_clipped_mean


def test_no_noise_mean_is_the_clipped_sum_over_expected_clients() -> None:
    # Two replies of an expected four, clip 1: (3, 4) has norm 5 -> (0.6, 0.8); (0.3, 0) is kept.
    # Sum (0.9, 0.8) divided by 4 (expected clients, not the 2 replies) = (0.225, 0.2).
    config = ClientDPConfig(noise_multiplier=0.0, clip=1.0, expected_clients=4)
    release = noisy_clipped_mean(
        [[np.array([3.0, 4.0])], [np.array([0.3, 0.0])]],
        config=config,
        clip_norm=1.0,
        shapes=[(2,)],
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(release.mean_update[0], [0.225, 0.2])
    assert release.norms == pytest.approx([5.0, 0.3])
    assert release.clipped_fraction == 0.5 and release.replies == 2


@pytest.mark.parametrize("replies", [8, 3, 0])
def test_noise_std_is_z_times_clip_over_expected_clients_whatever_replies(replies: int) -> None:
    # 100,000 coordinates: the sample std is within 1% of z * C / m. Dropouts change the signal only.
    config = ClientDPConfig(noise_multiplier=1.2, clip=0.5, expected_clients=8)
    updates = [[np.zeros(100_000)] for _ in range(replies)]
    release = noisy_clipped_mean(
        updates, config=config, clip_norm=0.5, shapes=[(100_000,)], rng=np.random.default_rng(replies)
    )
    assert release.mean_update[0].std() == pytest.approx(1.2 * 0.5 / 8, rel=0.01)


def test_adaptive_clip_moves_towards_the_target_quantile() -> None:
    config = ClientDPConfig(noise_multiplier=1.0, clip=1.0, expected_clients=100, adaptive=True, target_quantile=0.5)
    rng = np.random.default_rng(0)
    norms = list(rng.uniform(0, 10, size=100))  # median 5
    clip_norm = 0.1
    for _ in range(200):
        clip_norm = next_clip(clip_norm, norms, config=config, rng=rng)
    assert 3.5 < clip_norm < 6.5
    fixed = ClientDPConfig(noise_multiplier=1.0, clip=1.0, expected_clients=100)
    assert next_clip(0.1, norms, config=fixed, rng=rng) == 0.1


def test_adaptive_clipping_costs_privacy_through_the_effective_noise() -> None:
    # Andrew et al. 2021 Thm 1: z_eff = (z^-2 + (2 sigma_b)^-2)^(-1/2) with sigma_b = m / 20.
    config = ClientDPConfig(noise_multiplier=1.0, clip=1.0, expected_clients=20, adaptive=True)
    assert config.count_stddev == 1.0
    assert config.effective_noise_multiplier == pytest.approx((1 + 0.25) ** -0.5)
    assert ClientDPConfig(noise_multiplier=1.0, clip=1.0, expected_clients=20).effective_noise_multiplier == 1.0
