"""Settings of example-level DP-SGD for a central run, validated at the edge."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

from fedmodel.errors import ConfigError

EngineName = Literal["auto", "fast", "vectorized", "tfp"]
SamplingName = Literal["poisson", "shuffle"]
AccountantName = Literal["rdp", "pld"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """How a central run is made differentially private (unit: one training example).

    Attributes
    ----------
    l2_norm_clip:
        Per-example gradient L2 bound ``C`` (1.0 in Abadi et al. 2016 and the tensorflow-privacy tutorial).
    noise_multiplier:
        ``z``, noise std ``z * C`` per step. ``None``: calibrated from ``target_epsilon`` for the planned run.
    target_epsilon:
        Budget at ``delta``. With a noise multiplier given too, training stops before the step that would
        exceed it; with none given, the noise is calibrated so the planned run spends at most this.
    delta:
        Target delta; keep it below ``1 / examples`` (a warning says so otherwise).
    engine:
        ``auto``/``fast``/``vectorized`` (fedmodel's DP-SGD) or ``tfp`` (tensorflow-privacy's
        ``DPKeras*Optimizer`` reference: SGD, momentum and Adam only, fixed-size shuffled batches).
    sampling:
        ``poisson`` (each example joins each step with probability ``q = batch_size / examples``: what the
        accountant assumes) or ``shuffle`` (fixed-size batches of a shuffled epoch; accounted as Poisson
        with the same ``q``, the usual approximation, and reported as such).
    accountant:
        Which accountant enforces ``target_epsilon`` and is logged per epoch; reports show both.
    """

    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    engine: EngineName = "auto"
    sampling: SamplingName = "poisson"
    accountant: AccountantName = "rdp"

    def __post_init__(self) -> None:
        if not _finite(self.l2_norm_clip) or self.l2_norm_clip <= 0:
            raise ConfigError(f"l2_norm_clip must be a number > 0, got {self.l2_norm_clip!r}")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ConfigError("DP-SGD needs a noise multiplier or a target epsilon; got neither")
        if self.noise_multiplier is not None and (not _finite(self.noise_multiplier) or self.noise_multiplier < 0):
            raise ConfigError(f"noise_multiplier must be a number >= 0, got {self.noise_multiplier!r}")
        if self.target_epsilon is not None and (not _finite(self.target_epsilon) or self.target_epsilon <= 0):
            raise ConfigError(f"target_epsilon must be a number > 0, got {self.target_epsilon!r}")
        if not _finite(self.delta) or not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}")
        for field, value, allowed in (
            ("engine", self.engine, get_args(EngineName)),
            ("sampling", self.sampling, get_args(SamplingName)),
            ("accountant", self.accountant, get_args(AccountantName)),
        ):
            if value not in allowed:
                raise ConfigError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
        if self.engine == "tfp" and self.sampling != "shuffle":
            raise ConfigError("engine 'tfp' draws fixed-size batches: use sampling 'shuffle', got 'poisson'")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
