"""Validators for hyperparameter values, shared by the models' frozen hyperparameter dataclasses.

Each returns the value in canonical form (e.g. a list of widths becomes a tuple) or raises
:class:`~fedmodel.errors.ConfigError` with a one-line message naming the value and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TypeGuard

from fedmodel.errors import ConfigError


def is_int(value: object) -> TypeGuard[numbers.Integral]:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1 (bools are rejected)."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def positive_ints(name: str, value: object) -> tuple[int, ...]:
    """Return ``value`` as a non-empty tuple of ints >= 1 (a list or tuple is accepted)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
    if not all(is_int(item) and int(item) >= 1 for item in value):
        raise ConfigError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
    return tuple(int(item) for item in value)


def dropout_rate(name: str, value: object) -> float:
    """Return ``value`` as a float in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)
