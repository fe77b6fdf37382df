"""Audit canaries: secret extra examples (central runs) or extra clients (federated runs).

Each canary is included with probability 1/2 by a coin drawn from OS entropy
(:func:`fedmodel.privacy.randomness.numpy_rng`), never from ``--seed``: an attacker who knows the seed and
everything a run writes except the auditor's secret file still cannot tell which canaries trained.

- **Example canaries** (:func:`example_canaries`): inputs drawn uniformly over the training data's value
  range, with uniformly random labels. They look like nothing in the data, so a model that memorises them
  gives them a low loss; the included ones join the training set as ordinary examples (same sampling,
  same clipping), so the ledger's unit (one example) and its epsilon cover them like any other example.
- **Client canaries** (:class:`ClientCanaries`, Andrew et al. 2024, "One-shot Empirical Privacy Estimation
  for Federated Learning"): a canary client's update is a fixed random direction, at the norm a real
  update would be clipped to. Included canaries take part in each round with the real clients' sampling
  probability; the audit scores each canary by the cosine between the model's total change and its
  direction. Directions come from a secret key and are regenerated on demand, never stored.

The secret (inclusion bits, the key) is written to ``audit/`` in the run directory so a later
``fedmodel audit`` can score again: it is the auditor's, describes no real example or client, and is not
a privacy output.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedmodel.atomic import atomic_write, atomic_write_with
from fedmodel.privacy import randomness

SECRET_DIR = "audit"
SECRET_NOTE = (
    "The auditor's secret: which canaries were included (and the client canaries' key). It describes no real "
    "example or client; publishing it only spoils this audit."
)


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of canaries must be an integer >= 1, got {n!r}")


def secret_coins(n: int, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` fair coins (True = included) from OS entropy; ``rng`` is for tests only."""
    _check_count(n)
    rng = rng if rng is not None else randomness.numpy_rng()
    return rng.random(n) < 0.5


@dataclasses.dataclass(frozen=True)
class ExampleCanaries:
    """Canary examples and the secret coins that say which of them trained."""

    x: np.ndarray
    y: np.ndarray
    included: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.included):
            raise ValueError(
                f"canary x, y and included must have one entry per canary, got {len(self.x)}, {len(self.y)} "
                f"and {len(self.included)}"
            )

    def trained(self) -> tuple[np.ndarray, np.ndarray]:
        """The included canaries (to append to the training set)."""
        return self.x[self.included], self.y[self.included]

    def save(self, run_dir: Path) -> Path:
        path = Path(run_dir) / SECRET_DIR / "example_canaries.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path.with_suffix(".json"), json.dumps({"note": SECRET_NOTE, "canaries": len(self.x)}) + "\n")
        return atomic_write_with(
            path, lambda f: np.savez(f, x=self.x, y=self.y, included=self.included.astype(np.uint8))
        )

    @classmethod
    def load(cls, run_dir: Path) -> ExampleCanaries:
        path = Path(run_dir) / SECRET_DIR / "example_canaries.npz"
        with np.load(path, allow_pickle=False) as data:
            return cls(x=data["x"], y=data["y"], included=data["included"].astype(bool))


def example_canaries(
    n: int,
    *,
    x_like: np.ndarray,
    y_like: np.ndarray,
    num_classes: int,
    rng: np.random.Generator | None = None,
) -> ExampleCanaries:
    """``n`` canaries shaped like the training data, each included with probability 1/2 (secretly).

    Inputs are uniform over ``[x_like.min(), x_like.max()]`` (integers for integer inputs such as token
    ids), labels uniform over the classes (shaped like one label of ``y_like``).
    """
    _check_count(n)
    if len(x_like) == 0:
        raise ValueError("example canaries need training data to imitate, got 0 examples")
    rng = rng if rng is not None else randomness.numpy_rng()
    shape = (n, *x_like.shape[1:])
    lo, hi = x_like.min(), x_like.max()
    if np.issubdtype(x_like.dtype, np.integer):
        x = rng.integers(int(lo), int(hi) + 1, size=shape).astype(x_like.dtype)
    else:
        x = rng.uniform(float(lo), float(hi), size=shape).astype(x_like.dtype)
    if num_classes < 2:
        raise ValueError(f"example canaries need a classification task with >= 2 classes, got {num_classes}")
    y = rng.integers(0, num_classes, size=(n, *y_like.shape[1:])).astype(y_like.dtype)
    return ExampleCanaries(x=x, y=y, included=secret_coins(n, rng=rng))


class ClientCanaries:
    """Canary clients: secret inclusion coins and one secret random unit direction per canary.

    ``key`` (128 bits) regenerates every direction; runs draw it from OS entropy, tests pass their own.
    """

    def __init__(self, n: int, *, key: int | None = None, included: np.ndarray | None = None) -> None:
        _check_count(n)
        self.n = n
        self.key = key if key is not None else randomness.entropy(128)
        self.included = np.asarray(included, dtype=bool) if included is not None else secret_coins(n)
        if self.included.shape != (n,):
            raise ValueError(f"included must have one coin per canary ({n}), got shape {self.included.shape}")
        self._rng = randomness.numpy_rng()  # who takes part in a round: fresh OS entropy

    def direction(self, index: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Canary ``index``'s unit direction, as arrays of ``shapes`` (deterministic given the key)."""
        gen = np.random.Generator(np.random.Philox(key=self.key, counter=[index, 0, 0, 0]))
        size = sum(int(np.prod(s)) for s in shapes)
        flat = gen.standard_normal(size)
        flat /= np.linalg.norm(flat)
        out, start = [], 0
        for s in shapes:
            count = int(np.prod(s))
            out.append(flat[start : start + count].reshape(s))
            start += count
        return out

    def participants(self, rate: float) -> list[int]:
        """The included canaries that take part in a round where each client joins with probability ``rate``."""
        if not 0 <= rate <= 1:
            raise ValueError(f"participation rate must be in [0, 1], got {rate!r}")
        ids = np.flatnonzero(self.included)
        return [int(i) for i in ids[self._rng.random(len(ids)) < rate]]

    def scores(self, total_change: list[np.ndarray]) -> np.ndarray:
        """Cosine between the model's total change and each canary's direction (higher = included)."""
        shapes = [np.shape(a) for a in total_change]
        flat = np.concatenate([np.ravel(a).astype(np.float64) for a in total_change])
        norm = np.linalg.norm(flat)
        if norm == 0:
            return np.zeros(self.n)
        return np.array(
            [
                float(np.dot(flat, np.concatenate([d.ravel() for d in self.direction(i, shapes)])) / norm)
                for i in range(self.n)
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {"note": SECRET_NOTE, "canaries": self.n, "key": f"{self.key:032x}", "included": self.included.tolist()}

    def save(self, run_dir: Path) -> Path:
        path = Path(run_dir) / SECRET_DIR / "client_canaries.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> ClientCanaries:
        data = json.loads((Path(run_dir) / SECRET_DIR / "client_canaries.json").read_text())
        return cls(int(data["canaries"]), key=int(data["key"], 16), included=np.array(data["included"], dtype=bool))
