"""The distributed discrete Gaussian mechanism (Kairouz, Liu & Steinke, ICML 2021) for secure aggregation.

Each client turns its model update into integers modulo ``M = 2^bits`` and adds its own share of
discrete Gaussian noise, so that secure aggregation (which sums integers modulo ``M`` and shows the server
only the sum) releases ``sum of updates + noise`` and no party ever sees an un-noised update:

1. clip the update to L2 norm ``clip`` (``c``);
2. pad it to ``d = 2^k`` coordinates, scale by ``1/gamma`` and rotate it with a randomized Hadamard
   transform (signs from a public per-round seed), which spreads its mass evenly over the coordinates so
   the modular sum rarely wraps;
3. round each coordinate to an integer at random (unbiased), conditionally: redraw until the rounded
   vector's norm is within ``Delta_2`` (Proposition 22, with ``beta``); the norm bound that privacy rests
   on is then guaranteed, not probable;
4. add ``N_Z(0, s^2)`` noise (:mod:`.discrete_gaussian`, OS entropy) and reduce modulo ``M``.

The server maps the modular sum to ``[-M/2, M/2)``, rotates back and multiplies by ``gamma``.

Privacy. The guarantee counts only the noise of the *other* survivors: conditioned on the target
client's own share (which a colluding party could know), the two neighbouring sums differ by the target's
contribution. With at least ``min_survivors`` (``m``) survivors every round has ``m - 1`` counted shares.
Clients are drawn as a fixed-size cohort (replace-one-client adjacency, L2 sensitivity ``2 Delta_2``,
L1 sensitivity ``2 Delta_1``), so the abort rule (fewer than ``m`` survivors) depends on dropouts only,
never on whether a given client took part. Proposition 14 of the paper gives the round's Renyi DP
(:meth:`DistributedDiscreteGaussian.rdp`); its last term, ``alpha/2 (l2 + sqrt(d) tau)^2``, is bounded by
the Renyi DP of a Gaussian mechanism, which is what the ledger records
(:meth:`~DistributedDiscreteGaussian.event`, in the ledger's add-or-remove convention): an upper bound at
every order, so the RDP accountant's epsilon is a valid (slightly loose) bound. No amplification by sampling is claimed:
dp-accounting's bound for sampling without replacement uses the Gaussian's own structure, which the
discrete sum does not have; see ``docs/secure_aggregation.md``.

``noise_multiplier`` (``z``) means what it means for DP-FedAvg: the counted shares together carry noise of
standard deviation ``z * c`` per coordinate (before rounding effects), so the two are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import dp_accounting
import numpy as np

from fedmodel.errors import ConfigError
from fedmodel.privacy import discrete_gaussian
from fedmodel.privacy.accounting import RDP_ORDERS, rdp_epsilon

#: Larger scales add no accuracy and overflow the integer range (TFF caps its scale the same way).
MAX_SCALE = 1e6
#: The RDP orders of :meth:`DistributedDiscreteGaussian.rdp`: the ledger's (Proposition 14 holds for every
#: order >= 1; only the subsampled bounds we do not use need integers).
ORDERS = RDP_ORDERS
#: Conditional rounding gives up after this many redraws (each succeeds with probability >= 1 - beta).
MAX_ROUNDING_TRIES = 1000


@dataclass(frozen=True)
class DistributedDiscreteGaussian:
    """One round's encoding and privacy of the distributed discrete Gaussian (see the module docstring)."""

    clip: float
    noise_multiplier: float
    dim: int
    cohort: int
    min_survivors: int
    bits: int = 20
    beta: float = math.exp(-0.5)
    k_stddevs: float = 4.0

    def __post_init__(self) -> None:
        if not self.clip > 0 or not math.isfinite(self.clip):
            raise ConfigError(f"clip must be a finite number > 0, got {self.clip!r}")
        if not self.noise_multiplier >= 0 or not math.isfinite(self.noise_multiplier):
            raise ConfigError(f"noise multiplier must be a finite number >= 0, got {self.noise_multiplier!r}")
        if self.dim < 1:
            raise ConfigError(f"dim must be >= 1, got {self.dim}")
        if not 2 <= self.min_survivors <= self.cohort:
            raise ConfigError(
                f"min survivors must be in [2, cohort={self.cohort}] (the guarantee counts the noise of the "
                f"other survivors), got {self.min_survivors}"
            )
        if not 8 <= self.bits <= 30:
            raise ConfigError(f"bits must be in [8, 30] (Flower's SecAgg+ rounds to int32), got {self.bits}")
        if self.cohort * self.modulus >= 2**32:
            raise ConfigError(
                f"cohort x 2^bits must stay below 2^32 (SecAgg+'s field), got {self.cohort} x 2^{self.bits}"
            )
        if not 0 <= self.beta < 1:
            raise ConfigError(f"beta must be in [0, 1), got {self.beta}")
        if self.private and self.local_scale < 0.5:
            raise ConfigError(
                f"each client's discrete Gaussian scale is {self.local_scale:.3g} < 0.5 (Proposition 14 needs "
                ">= 0.5): raise the noise multiplier or the bits"
            )

    # -- parameters --------------------------------------------------------------------------------

    @property
    def private(self) -> bool:
        return self.noise_multiplier > 0

    @property
    def padded_dim(self) -> int:
        return 1 << max(0, math.ceil(math.log2(self.dim)))

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def counted_shares(self) -> int:
        """Noise shares the guarantee counts in a round with ``min_survivors`` survivors."""
        return self.min_survivors - 1

    @property
    def local_stddev(self) -> float:
        """Each client's noise std in model units: the counted shares together carry ``z * c``."""
        return self.noise_multiplier * self.clip / math.sqrt(self.counted_shares)

    @cached_property
    def scale(self) -> float:
        """``1 / gamma``: so that ``k_stddevs`` standard deviations of the cohort's sum fit in ``bits``.

        Kairouz et al. Section 4.4 (as TFF's ``_heuristic_scale_factor``, with the cohort as ``n``).
        """
        n, k, d = self.cohort, self.k_stddevs, self.padded_dim
        room = 2.0 ** (2 * self.bits) - n * k**2
        if room <= 0:
            raise ConfigError(f"{self.bits} bits cannot hold {n} clients' sums; raise bits")
        spread = math.sqrt(self.clip**2 * n**2 / d + n * self.local_stddev**2)
        return min(math.sqrt(room) / (2 * k * spread), MAX_SCALE)

    @property
    def gamma(self) -> float:
        """The rounding granularity in model units."""
        return 1.0 / self.scale

    @property
    def local_scale(self) -> float:
        """Each client's discrete Gaussian scale ``s`` in integer units."""
        return self.local_stddev * self.scale

    @cached_property
    def l2_bound(self) -> float:
        """``Delta_2``: the norm bound of a rounded, scaled update (Proposition 22; guaranteed by rejection)."""
        c, d = self.clip * self.scale, self.padded_dim
        bound = c + math.sqrt(d)
        if self.beta > 0:
            conditional = math.sqrt(c**2 + d / 4 + math.sqrt(2 * math.log(1 / self.beta)) * (c + math.sqrt(d) / 2))
            bound = min(bound, conditional)
        return bound

    @property
    def l1_bound(self) -> float:
        """``Delta_1``: an integer vector's L1 norm is at most ``min(sqrt(d), Delta_2) * Delta_2``."""
        return self.l2_bound * min(math.sqrt(self.padded_dim), self.l2_bound)

    # -- privacy -----------------------------------------------------------------------------------

    def tau(self, shares: int | None = None) -> float:
        """Theorem 1's ``tau``: how far a sum of ``shares`` discrete Gaussians is from one discrete Gaussian."""
        n = self.counted_shares if shares is None else shares
        s2 = self.local_scale**2
        return 10 * sum(math.exp(-2 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, n))

    def _scales(self, shares: int | None) -> tuple[float, float, float]:
        n = self.counted_shares if shares is None else shares
        if n < 1 or not self.private:
            return math.inf, math.inf, self.tau(shares)
        total = math.sqrt(n) * self.local_scale
        # replace-one adjacency: the difference of two clients' rounded updates
        return 2 * self.l2_bound / total, 2 * self.l1_bound / total, self.tau(shares)

    def rdp(self, orders: Sequence[float] = ORDERS, *, shares: int | None = None) -> np.ndarray:
        """Renyi DP of one round at ``orders`` with ``shares`` counted noise shares (Proposition 14)."""
        l2, l1, tau = self._scales(shares)
        d = self.padded_dim
        out = []
        for a in orders:
            out.append(
                min(
                    a / 2 * l2**2 + tau * d,
                    a / 2 * (l2**2 + 2 * l1 * tau + tau**2 * d),
                    a / 2 * (l2 + math.sqrt(d) * tau) ** 2,
                )
            )
        return np.array(out)

    def effective_noise_multiplier(self, shares: int | None = None) -> float:
        """The ledger's Gaussian noise multiplier, in its add-or-remove convention (std / one update's bound).

        ``1 / (Delta_2 / (sqrt(n) s) + sqrt(d) tau)``. For fixed-size cohorts the ledger halves it (replace-one
        doubles the sensitivity), charging ``alpha/2 (2 l2 + 2 sqrt(d) tau)^2`` at order ``alpha``, which is at
        least Proposition 14's last term ``alpha/2 (2 l2 + sqrt(d) tau)^2`` (:meth:`rdp`). Without rounding
        and ``tau`` it is ``z``, as for DP-FedAvg.
        """
        l2, _, tau = self._scales(shares)
        return 1.0 / (l2 / 2 + math.sqrt(self.padded_dim) * tau)

    def event(self, shares: int | None = None) -> dp_accounting.GaussianDpEvent:
        """The round's event for the ledger (an upper bound, see :meth:`effective_noise_multiplier`)."""
        return dp_accounting.GaussianDpEvent(self.effective_noise_multiplier(shares))

    def epsilon(self, rounds: int, delta: float, *, shares: int | None = None) -> float:
        """Epsilon of ``rounds`` rounds from Proposition 14's full curve (the ledger's is a little larger)."""
        return rdp_epsilon(self.rdp(ORDERS, shares=shares) * rounds, delta=delta, orders=ORDERS)

    # -- encoding ----------------------------------------------------------------------------------

    def encode(
        self, update: Sequence[np.ndarray], *, rotation_seed: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, bool]:
        """A client's integers in ``[0, M)`` for secure aggregation, and whether its update was clipped."""
        flat = np.concatenate([np.ravel(u).astype(np.float64) for u in update])
        if flat.size != self.dim:
            raise ValueError(f"update has {flat.size} values, the mechanism expects {self.dim}")
        norm = float(np.linalg.norm(flat))
        clipped = norm > self.clip
        if clipped:
            flat *= self.clip / norm
        x = np.zeros(self.padded_dim)
        x[: self.dim] = flat * self.scale
        x = _fwht(x * _signs(rotation_seed, self.padded_dim)) / math.sqrt(self.padded_dim)
        rounded = self._round(x, rng)
        noisy = rounded + discrete_gaussian.sample(self.local_scale, self.padded_dim, rng=rng)
        return np.mod(noisy, self.modulus), clipped

    def _round(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        floor = np.floor(x)
        for _ in range(MAX_ROUNDING_TRIES):
            rounded = (floor + (rng.random(x.shape) < x - floor)).astype(np.int64)
            if float(np.linalg.norm(rounded.astype(np.float64))) <= self.l2_bound:
                return rounded
        raise RuntimeError(f"conditional rounding failed {MAX_ROUNDING_TRIES} times (beta={self.beta})")

    def decode(self, total: np.ndarray, *, rotation_seed: int, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """The noisy sum of the clipped updates in model units, from the modular sum of the encodings."""
        centred = np.mod(np.asarray(total, dtype=np.int64), self.modulus)
        centred = np.where(centred >= self.modulus // 2, centred - self.modulus, centred).astype(np.float64)
        x = _fwht(centred) * _signs(rotation_seed, self.padded_dim) / math.sqrt(self.padded_dim)
        flat = x[: self.dim] / self.scale
        out, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return out

    def describe(self) -> dict[str, float | int]:
        """The mechanism's parameters for run.json (what actually ran)."""
        return {
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "bits": self.bits,
            "modulus": self.modulus,
            "dim": self.dim,
            "padded_dim": self.padded_dim,
            "gamma": self.gamma,
            "beta": self.beta,
            "local_noise_scale_integers": self.local_scale,
            "local_noise_stddev": self.local_stddev,
            "l2_sensitivity_integers": 2 * self.l2_bound,
            "cohort": self.cohort,
            "min_survivors": self.min_survivors,
            "counted_shares": self.counted_shares,
            "effective_noise_multiplier": self.effective_noise_multiplier() if self.private else 0.0,
        }


def _signs(seed: int, d: int) -> np.ndarray:
    """The rotation's random signs: public (from the round's seed), not privacy randomness."""
    return np.where(np.random.default_rng(seed).random(d) < 0.5, -1.0, 1.0)


def _fwht(x: np.ndarray) -> np.ndarray:
    """The (unnormalised) fast Walsh-Hadamard transform of a vector whose length is a power of 2."""
    n = len(x)
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        y = np.stack((y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]), axis=1).reshape(n)
        h *= 2
    return y
