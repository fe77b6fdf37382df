"""Simulated malicious clients: poisoned updates and poisoned labels, for testing robust aggregation.

A run with ``attack != "none"`` makes ``round(attack_fraction * num_clients)`` of its simulated clients
malicious (which ones follows ``--seed``: this is an experiment's setup, not a secret). Every round a
malicious client takes part in, it trains as usual and then

- ``sign-flip``: sends ``w - s * delta`` (its update reversed and scaled; Blanchard et al. 2017 use -1),
- ``scale``: sends ``w + s * delta`` (boosted update, "model replacement", Bagdasaryan et al. 2020),
- ``noise``: sends ``w + N(0, (s * rms(delta))^2)`` per coordinate (a random update of similar size),
- ``nan``: sends NaN for every weight (a malformed update: the server rejects it before aggregation),
- ``label-flip``: trains on flipped labels ``C - 1 - y`` (data poisoning; Tolpegin et al. 2020) and
  sends an ordinary update,

where ``delta`` is its honest update, ``w`` the global weights it received and ``s = attack_scale``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

import numpy as np

from fedmodel.errors import ConfigError

AttackName = Literal["none", "sign-flip", "scale", "noise", "nan", "label-flip"]
ATTACKS: tuple[str, ...] = get_args(AttackName)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Which clients attack and how (see the module docstring)."""

    kind: AttackName = "none"
    fraction: float = 0.0
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ConfigError(f"attack must be one of {', '.join(ATTACKS)}, got {self.kind!r}")
        if not isinstance(self.fraction, int | float) or not 0 <= self.fraction < 1:
            raise ConfigError(f"attack-fraction must be in [0, 1), got {self.fraction!r}")
        if not isinstance(self.scale, int | float) or not math.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"attack-scale must be a finite number > 0, got {self.scale!r}")

    def malicious(self, num_clients: int, seed: int) -> frozenset[int]:
        """The partition ids of the malicious clients (seeded; none when ``kind`` is ``none``)."""
        if self.kind == "none":
            return frozenset()
        count = round(self.fraction * num_clients)
        order = np.random.default_rng([seed, 0xA77AC]).permutation(num_clients)
        return frozenset(int(i) for i in order[:count])


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping: class ``c`` becomes ``num_classes - 1 - c``."""
    return (num_classes - 1 - np.asarray(y)).astype(np.asarray(y).dtype)


def poison_update(
    new: list[np.ndarray], old: list[np.ndarray], *, kind: AttackName, scale: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """The weights a malicious client sends instead of ``new`` (its honest result from ``old``)."""
    if kind in ("none", "label-flip"):
        return new
    deltas = [n.astype(np.float64) - o for n, o in zip(new, old, strict=True)]
    if kind == "sign-flip":
        out = [o - scale * d for o, d in zip(old, deltas, strict=True)]
    elif kind == "scale":
        out = [o + scale * d for o, d in zip(old, deltas, strict=True)]
    elif kind == "noise":
        total = sum(float(np.sum(d**2)) for d in deltas)
        size = sum(d.size for d in deltas)
        std = scale * math.sqrt(total / max(size, 1))
        out = [o + rng.normal(0.0, std, size=o.shape) for o in old]
    elif kind == "nan":
        out = [np.full(o.shape, np.nan) for o in old]
    else:
        raise ValueError(f"unknown attack {kind!r}")
    return [a.astype(o.dtype) for a, o in zip(out, old, strict=True)]
