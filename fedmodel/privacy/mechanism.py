"""The Gaussian mechanism: one immutable value for every noisy release fedmodel makes.

Vocabulary (as tensorflow-privacy's ``DPQuery``): a *record* is one unit's contribution (one example's
gradient in DP-SGD, one client's model update in DP-FedAvg); each record is *clipped* to L2 norm
``clip``; the clipped records are summed; the mechanism adds Gaussian noise of standard deviation
``noise_multiplier * clip`` to the sum, once. Under add-or-remove-one adjacency the sum's L2 sensitivity
is ``clip``, so one release is a ``GaussianDpEvent(noise_multiplier)`` (dp-accounting's convention:
noise std divided by sensitivity).

:class:`GaussianMechanism` is validated once, at construction, and is the only place the pair
``(noise_multiplier, clip)`` is checked. DP-SGD (``fedmodel.privacy.engine.dpsgd``), client-level DP
(``fedmodel.federated.client_dp``) and local DP all hold one; each release returns the mechanism's
:meth:`~GaussianMechanism.event`, and the privacy ledger records that event, never a configuration field.

Randomness: pass a generator from :mod:`fedmodel.privacy.randomness` (OS entropy); tests pass a seeded
one to measure the noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import dp_accounting
import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.privacy.randomness import NOISE_DRAWS


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianMechanism:
    """Gaussian noise of std ``noise_multiplier * clip`` on a sum of records clipped to L2 norm ``clip``.

    Attributes
    ----------
    noise_multiplier:
        ``z`` (dimensionless, >= 0): noise std divided by the clip norm. 1.1 in the tensorflow-privacy
        MNIST tutorial (Abadi et al. 2016); about 1.0 for DP-FedAvg (McMahan et al. 2018). 0 is allowed
        and means no privacy (epsilon is infinite).
    clip:
        ``C`` (> 0, in the units of the records: gradient or model-update L2 norm): every record is scaled
        to norm at most ``C`` before summing.
    """

    noise_multiplier: float
    clip: float

    def __post_init__(self) -> None:
        z, c = self.noise_multiplier, self.clip
        if not _real(z) or not math.isfinite(z) or z < 0:
            raise ConfigError(f"noise multiplier must be a finite number >= 0, got {z!r}")
        if not _real(c) or not math.isfinite(c) or c <= 0:
            raise ConfigError(f"clip must be a finite number > 0, got {c!r}")
        object.__setattr__(self, "noise_multiplier", float(z))
        object.__setattr__(self, "clip", float(c))

    @property
    def stddev(self) -> float:
        """Standard deviation of the noise added to each coordinate of the sum: ``noise_multiplier * clip``."""
        return self.noise_multiplier * self.clip

    @property
    def private(self) -> bool:
        """False when no noise is added (``noise_multiplier == 0``)."""
        return self.noise_multiplier > 0

    def event(self) -> dp_accounting.GaussianDpEvent:
        """The DpEvent of one release (add-or-remove-one adjacency: sensitivity ``clip``)."""
        return dp_accounting.GaussianDpEvent(self.noise_multiplier)

    def with_clip(self, clip: float) -> GaussianMechanism:
        """The same noise multiplier at another clip norm (adaptive clipping moves ``clip`` every round)."""
        return dataclasses.replace(self, clip=clip)

    def clip_record(self, record: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """``record`` scaled to L2 norm at most ``clip`` (jointly over its arrays), and its original norm."""
        norm = math.sqrt(sum(float(np.sum(np.square(np.asarray(a, np.float64)))) for a in record))
        scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
        return [np.asarray(a, np.float64) * scale for a in record], norm

    def add_noise(
        self, total: Sequence[np.ndarray], *, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], dp_accounting.GaussianDpEvent]:
        """The noised sum (float64) and the event of this release."""
        noised = [np.asarray(t, np.float64) + self.stddev * standard_normal(rng, np.shape(t)) for t in total]
        return noised, self.event()

    def release(
        self, records: Sequence[Sequence[np.ndarray]], *, shapes: Sequence[tuple[int, ...]], rng: np.random.Generator
    ) -> tuple[list[np.ndarray], dp_accounting.GaussianDpEvent, int]:
        """Clip every record, sum, add noise once. Returns the noised sum, its event, and how many were clipped.

        An empty ``records`` still releases noise (the event is the same).
        """
        total = [np.zeros(s, np.float64) for s in shapes]
        clipped = 0
        for record in records:
            bounded, norm = self.clip_record(record)
            clipped += norm > self.clip
            for acc, part in zip(total, bounded, strict=True):
                acc += part
        noised, event = self.add_noise(total, rng=rng)
        return noised, event, clipped


def combined_event(*events: dp_accounting.GaussianDpEvent) -> dp_accounting.GaussianDpEvent:
    """Several Gaussian releases on the same records as one Gaussian event: ``z^-2 = sum_i z_i^-2``.

    Releasing ``f_i(D) + N(0, (z_i s_i)^2)`` for each ``i``, with ``s_i`` the sensitivity of ``f_i``, is the
    Gaussian mechanism on the concatenation of the rescaled ``f_i / (z_i s_i)`` (Dong, Roth & Su 2019,
    Gaussian DP composition; Andrew et al. 2021, Thm. 1). A zero noise multiplier anywhere gives zero.
    """
    if not events:
        raise ValueError("combined_event needs at least one event")
    if any(e.noise_multiplier == 0 for e in events):
        return dp_accounting.GaussianDpEvent(0.0)
    return dp_accounting.GaussianDpEvent(sum(e.noise_multiplier**-2 for e in events) ** -0.5)


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal noise as the mean of :data:`NOISE_DRAWS` draws times ``sqrt(NOISE_DRAWS)``."""
    total = np.zeros(shape, np.float64)
    for _ in range(NOISE_DRAWS):
        total += rng.standard_normal(shape)
    return total / math.sqrt(NOISE_DRAWS)


def _real(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
