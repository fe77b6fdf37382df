"""The Gaussian mechanism: validated once, hand-computed clipping, noise of the stated std, its DpEvent.

Statistical tolerance: 100,000 noise values have a sample std within 1.5% of the stated one (the
estimate's own std is 0.22%: about 7 sigma).
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy.mechanism import GaussianMechanism, combined_event, standard_normal


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"noise_multiplier": -0.1, "clip": 1.0}, "noise multiplier must be a finite number >= 0, got -0.1"),
        ({"noise_multiplier": math.nan, "clip": 1.0}, "noise multiplier must be a finite number >= 0, got nan"),
        ({"noise_multiplier": True, "clip": 1.0}, "noise multiplier must be a finite number >= 0, got True"),
        ({"noise_multiplier": 1.0, "clip": 0.0}, "clip must be a finite number > 0, got 0.0"),
        ({"noise_multiplier": 1.0, "clip": math.inf}, "clip must be a finite number > 0, got inf"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        GaussianMechanism(**kwargs)
    assert fragment in str(err.value)


def test_stddev_event_and_privacy() -> None:
    mechanism = GaussianMechanism(noise_multiplier=1.1, clip=2)
    assert mechanism.clip == 2.0 and isinstance(mechanism.clip, float)
    assert mechanism.stddev == pytest.approx(2.2)
    assert mechanism.private and not GaussianMechanism(noise_multiplier=0, clip=1.0).private
    assert mechanism.event() == dp_accounting.GaussianDpEvent(1.1)
    assert mechanism.with_clip(0.5) == GaussianMechanism(noise_multiplier=1.1, clip=0.5)


def test_clip_record_by_hand() -> None:
    # Record ([3], [4]): joint norm 5; clip 1 scales it by 1/5 to ([0.6], [0.8]).
    clipped, norm = GaussianMechanism(noise_multiplier=1.0, clip=1.0).clip_record([np.array([3.0]), np.array([4.0])])
    assert norm == 5.0
    np.testing.assert_allclose(np.concatenate(clipped), [0.6, 0.8])
    kept, small = GaussianMechanism(noise_multiplier=1.0, clip=10.0).clip_record([np.array([3.0, 4.0])])
    np.testing.assert_array_equal(kept[0], [3.0, 4.0])  # within the clip: unchanged
    assert small == 5.0


def test_an_empty_release_is_noise_of_the_stated_std() -> None:
    mechanism = GaussianMechanism(noise_multiplier=1.3, clip=0.7)
    noised, event, clipped = mechanism.release([], shapes=[(100_000,)], rng=np.random.default_rng(5))
    assert event == dp_accounting.GaussianDpEvent(1.3) and clipped == 0
    assert noised[0].std() == pytest.approx(1.3 * 0.7, rel=0.015)
    assert abs(noised[0].mean()) < 0.02 * 1.3 * 0.7


def test_standard_normal_is_unit_variance() -> None:
    values = standard_normal(np.random.default_rng(1), (100_000,))
    assert values.std() == pytest.approx(1.0, rel=0.015)


def test_combined_event_adds_inverse_variances() -> None:
    got = combined_event(dp_accounting.GaussianDpEvent(1.0), dp_accounting.GaussianDpEvent(1.0))
    assert got.noise_multiplier == pytest.approx(1 / math.sqrt(2))
    assert combined_event(dp_accounting.GaussianDpEvent(0.0), dp_accounting.GaussianDpEvent(2.0)).noise_multiplier == 0
    with pytest.raises(ValueError, match="at least one event"):
        combined_event()
