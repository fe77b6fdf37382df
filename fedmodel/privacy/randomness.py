"""Where privacy randomness comes from: the operating system's entropy, never ``--seed``.

A DP guarantee holds only while the attacker cannot predict the noise. Everything a run writes
(``run.json`` with its ``seed``, logs, checkpoints) is assumed public, so every random draw that a
privacy claim rests on comes from a generator seeded here, from ``secrets`` (the OS's CSPRNG), in every
process and every run:

- DP noise (DP-SGD, client-level DP, local DP): a counter-based Philox generator (TensorFlow's
  ``tf.random.Generator`` for the DP-SGD engine, NumPy's ``Philox`` bit generator for the federated
  server), keyed with fresh OS entropy;
- Poisson batch sampling and client sampling: NumPy ``Philox`` keyed with fresh OS entropy.

The key is drawn when the generator is made and never written anywhere. ``--seed`` keeps its meaning for
what must be reproducible and is not private: weight initialisation, train/validation splits, client
partitions, the order of non-private training.

Tests that check noise statistics pass their own generator to the mechanism (dependency injection); they
never reseed a global. :func:`is_secure` lets a mechanism state in its record whether it drew from here.

Floating-point attacks on Gaussian sampling (Mironov 2012; Holohan & Braghin 2021) are covered in
``docs/privacy.md``: noise is the sum of several independent normal draws, rescaled
(:data:`NOISE_DRAWS`), which smooths the gaps in the floating-point output of a single draw.
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

#: Independent standard-normal draws summed (and divided by ``sqrt(NOISE_DRAWS)``) for each noise value,
#: as Opacus' ``secure_mode`` does against attacks on the floating-point output of one draw.
NOISE_DRAWS = 4

_SECURE_TAG = "_fedmodel_secure"


def entropy(bits: int = 128) -> int:
    """A fresh non-negative integer of ``bits`` bits from the operating system's CSPRNG."""
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be an int >= 1, got {bits!r}")
    return secrets.randbits(bits)


def numpy_rng() -> np.random.Generator:
    """A NumPy generator (Philox, 128-bit key and counter) keyed with fresh OS entropy."""
    return _SecureGenerator(np.random.Philox(key=entropy(128), counter=entropy(256)))


def tf_generator() -> Any:
    """A ``tf.random.Generator`` (Philox) whose whole state (counter and key) is fresh OS entropy.

    Create it inside a ``tf.distribute`` strategy's scope when it is used in replica context.
    """
    import tensorflow as tf

    words = [_int64(entropy(64)) for _ in range(3)]  # Philox state: 128-bit counter, 64-bit key
    gen = tf.random.Generator.from_state(state=words, alg="philox")
    setattr(gen, _SECURE_TAG, True)
    return gen


def is_secure(generator: object) -> bool:
    """True when ``generator`` was made by this module (seeded from OS entropy, not a test's seed)."""
    if isinstance(generator, np.random.Generator):
        return isinstance(generator, _SecureGenerator)
    return bool(getattr(generator, _SECURE_TAG, False))


class _SecureGenerator(np.random.Generator):
    """A NumPy generator made by :func:`numpy_rng` (a marker type for :func:`is_secure`)."""


def _int64(value: int) -> int:
    """An unsigned 64-bit value as the signed int64 TensorFlow stores."""
    return value - (1 << 64) if value >= 1 << 63 else value
