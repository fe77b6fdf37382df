"""Client-level differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018).

Each sampled client's update ``delta_i = w_i - w`` is a *record*. The round's
:class:`~fedmodel.privacy.mechanism.GaussianMechanism` clips every record to L2 norm ``C``, sums them and
adds Gaussian noise of standard deviation ``z * C`` once; the sum is divided by the *expected* number of
clients per round ``m = q * N`` (a fixed denominator). Unit of privacy: one client's whole contribution.

**Sampling** (what the accountant assumes is what runs; see :mod:`fedmodel.federated.client_sampling`):

- ``poisson`` (default): every available client joins each round independently with probability
  ``q = m / N``, drawn from an OS-entropy generator; the ledger records
  ``PoissonSampled(q, Gaussian(z))`` under add-or-remove-one-client adjacency.
- ``fixed-size``: exactly ``m`` of the ``N`` clients, uniformly without replacement; the ledger records
  ``SampledWithoutReplacement(N, m, Gaussian(z / 2))`` under replace-one-client adjacency (replacing one
  client moves the clipped sum by up to ``2 C``), which only the RDP accountant bounds (Wang et al. 2019).

**Dropouts.** The denominator does not depend on how many clients replied, so a missing client only
removes its (bounded) term from the sum: the noise std on the sum stays ``z * C`` and each round stays a
Gaussian mechanism with sensitivity ``C``. A round where nobody was sampled or replied still adds noise
and is still recorded.

**Adaptive clipping** (Andrew et al. 2021): after each round the clip moves towards the
``target_quantile`` of update norms: ``C <- C * exp(-eta * (b - gamma))``, with ``b`` the noised fraction of
clients whose update norm was at most ``C``. The fraction is released as a *centred* count: each client
contributes ``1[norm <= C] - 1/2`` (L2 sensitivity 1/2), the sum gets noise of std ``sigma_b``, and
``b = noised sum / m + 1/2``; so the count is a Gaussian mechanism with noise multiplier ``2 sigma_b``
(a second :class:`GaussianMechanism` with clip 1/2). The two releases on the same sampled clients are one
Gaussian mechanism with ``z_eff = (z^-2 + (2 sigma_b)^-2)^(-1/2)`` (Andrew et al. Thm. 1;
tensorflow-privacy's ``QuantileAdaptiveClipSumQuery``), which is the event the ledger records. Releasing
the *uncentred* count with this formula would understate epsilon (sensitivity 1, not 1/2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import dp_accounting
import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.federated.weights import global_norm
from fedmodel.privacy.accounting import FixedSizeSampling, PoissonSampling
from fedmodel.privacy.mechanism import GaussianMechanism, combined_event

Weights = list[np.ndarray]
ClientSampling = PoissonSampling | FixedSizeSampling


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientDPConfig:
    """Settings of the noisy clipped mean; see the module docstring.

    Attributes
    ----------
    mechanism:
        Noise multiplier ``z`` and the (initial) clip ``C`` on each client's update norm.
    num_clients:
        ``N``, the client population that the sampling refers to.
    sampling:
        :class:`PoissonSampling` at ``q = m / N`` or :class:`FixedSizeSampling` of ``m`` of ``N`` clients.
    adaptive, target_quantile, clip_lr:
        Adaptive clipping (Andrew et al. 2021 use target quantile 0.5 and learning rate 0.2).
    """

    mechanism: GaussianMechanism
    num_clients: int
    sampling: ClientSampling
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
            raise ConfigError(f"num_clients must be an integer >= 1, got {self.num_clients!r}")
        if isinstance(self.sampling, FixedSizeSampling) and self.sampling.population != self.num_clients:
            raise ConfigError(
                f"fixed-size sampling must draw from the {self.num_clients} clients, got population "
                f"{self.sampling.population}"
            )
        if not 0 < self.target_quantile < 1:
            raise ConfigError(f"target quantile must be in (0, 1), got {self.target_quantile!r}")
        if not (isinstance(self.clip_lr, int | float) and math.isfinite(self.clip_lr) and self.clip_lr > 0):
            raise ConfigError(f"clip learning rate must be a number > 0, got {self.clip_lr!r}")

    @property
    def expected_clients(self) -> float:
        """``m``: the expected number of clients per round, the fixed denominator of the mean."""
        if isinstance(self.sampling, FixedSizeSampling):
            return float(self.sampling.size)
        return self.sampling.rate * self.num_clients

    @property
    def count_mechanism(self) -> GaussianMechanism | None:
        """The centred clipped-count release of adaptive clipping: clip 1/2, std ``sigma_b = m / 20``."""
        if not self.adaptive:
            return None
        sigma_b = self.expected_clients / 20.0  # Andrew et al. 2021 suggest m / 20
        return GaussianMechanism(noise_multiplier=sigma_b / 0.5, clip=0.5)

    def round_event(self) -> dp_accounting.GaussianDpEvent:
        """The Gaussian event of one round (before sampling): the sum's, combined with the count's if adaptive."""
        count = self.count_mechanism
        if count is None:
            return self.mechanism.event()
        return combined_event(self.mechanism.event(), count.event())


def client_dp_config(
    *,
    noise_multiplier: float,
    clip: float,
    num_clients: int,
    clients_per_round: int,
    sampling: str,
    adaptive: bool = False,
    target_quantile: float = 0.5,
    clip_lr: float = 0.2,
) -> ClientDPConfig:
    """Build a :class:`ClientDPConfig` from the run's settings (``sampling``: "poisson" or "fixed-size")."""
    mechanism = GaussianMechanism(noise_multiplier=noise_multiplier, clip=clip)
    if sampling == "poisson":
        how: ClientSampling = PoissonSampling(clients_per_round / num_clients)
    elif sampling == "fixed-size":
        how = FixedSizeSampling(population=num_clients, size=clients_per_round)
    else:
        raise ConfigError(f"client sampling must be 'poisson' or 'fixed-size', got {sampling!r}")
    return ClientDPConfig(
        mechanism=mechanism,
        sampling=how,
        adaptive=adaptive,
        target_quantile=target_quantile,
        clip_lr=clip_lr,
        num_clients=num_clients,
    )


@dataclasses.dataclass(frozen=True)
class RoundRelease:
    """What one noisy round released (and nothing per client).

    ``event`` is the round's Gaussian event (for the ledger, with ``sampling``); ``clipped`` and ``replies``
    are counts computed on private data without noise: diagnostics, not covered by the ledger.
    """

    mean_update: Weights
    clip: float
    next_clip: float
    event: dp_accounting.GaussianDpEvent
    sampling: ClientSampling
    replies: int
    clipped: int


def release_round(
    updates: Sequence[Sequence[np.ndarray]],
    *,
    config: ClientDPConfig,
    clip: float,
    shapes: Sequence[tuple[int, ...]],
    rng: np.random.Generator,
) -> RoundRelease:
    """``(sum_i clip(update_i, C) + N(0, (z C)^2)) / m``, and (adaptive) the next round's clip."""
    mechanism = config.mechanism.with_clip(clip)
    noised, event, clipped = mechanism.release(updates, shapes=shapes, rng=rng)
    m = config.expected_clients
    mean = [total / m for total in noised]
    new_clip = clip
    count = config.count_mechanism
    if count is not None:
        centred = [[np.array([1.0 if global_norm(u) <= clip else 0.0]) - 0.5] for u in updates]
        noised_count, count_event, _ = count.release(centred, shapes=[(1,)], rng=rng)
        event = combined_event(event, count_event)  # the two releases that ran, as one Gaussian
        fraction = float(noised_count[0][0]) / m + 0.5
        new_clip = clip * math.exp(-config.clip_lr * (fraction - config.target_quantile))
    return RoundRelease(
        mean_update=mean,
        clip=clip,
        next_clip=new_clip,
        event=event,
        sampling=config.sampling,
        replies=len(updates),
        clipped=clipped,
    )
