"""Client-level differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018).

Each sampled client's update ``delta_i = w_i - w`` is clipped to L2 norm ``C``; the clipped updates are
summed; Gaussian noise with standard deviation ``z * C`` is added once to the sum; the sum is divided by
the *expected* number of clients per round ``m`` (a fixed denominator). Unit of privacy: one client's
whole contribution; adjacency: add-or-remove-one-client.

**Dropouts.** The denominator does not depend on how many clients replied, so a missing client only
removes its (bounded) term from the sum: the noise std on the sum stays ``z * C`` and each round stays a
Gaussian mechanism with sensitivity ``C``. The accounting is unchanged; the round's update is just
smaller. (Dividing by the number of replies instead would raise the sensitivity of the mean to
``C / replies`` while the noise was sized for ``m``: under-noised.) A round where nobody replied still
adds noise and is still recorded.

**Adaptive clipping** (Andrew et al. 2021): after each round the clip moves towards the
``target_quantile`` of update norms: ``C <- C * exp(-eta * (b - gamma))`` with ``b`` the noised fraction of
clients whose norm was at most ``C`` (count noise std ``sigma_b``). The count is a second Gaussian release;
the two compose into one Gaussian with noise multiplier ``(z^-2 + (2 sigma_b)^-2)^(-1/2)`` (their Thm. 1,
tensorflow-privacy's ``QuantileAdaptiveClipSumQuery``), which is what the ledger records.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.federated.weights import Weights, clip


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientDPConfig:
    """Settings of the noisy clipped mean; see the module docstring."""

    noise_multiplier: float
    clip: float
    expected_clients: int
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ConfigError(f"noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.clip <= 0:
            raise ConfigError(f"clip must be > 0, got {self.clip}")
        if self.expected_clients < 1:
            raise ConfigError(f"expected clients per round must be >= 1, got {self.expected_clients}")

    @property
    def count_stddev(self) -> float:
        """Noise std of the clipped-count release (Andrew et al. suggest m / 20)."""
        return self.expected_clients / 20.0 if self.adaptive else 0.0

    @property
    def effective_noise_multiplier(self) -> float:
        """The single-Gaussian noise multiplier the accountant sees for one round."""
        if not self.adaptive or self.noise_multiplier == 0:
            return self.noise_multiplier
        return (self.noise_multiplier**-2 + (2 * self.count_stddev) ** -2) ** -0.5


@dataclasses.dataclass
class RoundRelease:
    """What one noisy round released, and the facts behind it."""

    mean_update: Weights
    clip: float
    norms: list[float]
    clipped_fraction: float
    replies: int


def noisy_clipped_mean(
    updates: Sequence[Sequence[np.ndarray]],
    *,
    config: ClientDPConfig,
    clip_norm: float,
    shapes: Sequence[tuple[int, ...]],
    rng: np.random.Generator,
) -> RoundRelease:
    """``(sum_i clip(update_i, C) + N(0, (z C)^2)) / m`` and the per-client norms."""
    total = [np.zeros(s, np.float64) for s in shapes]
    norms = []
    for update in updates:
        clipped, norm = clip(update, clip_norm)
        norms.append(norm)
        for acc, c in zip(total, clipped, strict=True):
            acc += c
    std = config.noise_multiplier * clip_norm
    mean = [(acc + rng.normal(0.0, std, acc.shape)) / config.expected_clients for acc in total]
    clipped_fraction = float(np.mean([n > clip_norm for n in norms])) if norms else 0.0
    return RoundRelease(mean, clip_norm, norms, clipped_fraction, len(updates))


def next_clip(clip_norm: float, norms: Sequence[float], *, config: ClientDPConfig, rng: np.random.Generator) -> float:
    """The adaptive clip for the next round (geometric update towards the target quantile)."""
    if not config.adaptive:
        return clip_norm
    below = sum(1.0 for n in norms if n <= clip_norm)
    noisy_fraction = (below + rng.normal(0.0, config.count_stddev)) / config.expected_clients
    return clip_norm * math.exp(-config.clip_lr * (noisy_fraction - config.target_quantile))
