"""Model weights as lists of numpy arrays, and the arithmetic of updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Weights = list[np.ndarray]


def delta(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> Weights:
    """``new - old`` per array, in float64 for exact accumulation."""
    return [np.asarray(n, np.float64) - np.asarray(o, np.float64) for n, o in zip(new, old, strict=True)]


def global_norm(arrays: Sequence[np.ndarray]) -> float:
    """The L2 norm of all arrays flattened together."""
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def clip(arrays: Sequence[np.ndarray], bound: float) -> tuple[Weights, float]:
    """Scale ``arrays`` jointly to L2 norm at most ``bound``; returns the clipped arrays and the norm before."""
    norm = global_norm(arrays)
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return [np.asarray(a, np.float64) * factor for a in arrays], norm


def weighted_average(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> Weights:
    """``sum_i w_i u_i / sum_i w_i`` per array (FedAvg's aggregate with example counts as weights)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to > 0, got {list(weights)}")
    out = [np.zeros(np.shape(a), np.float64) for a in updates[0]]
    for update, w in zip(updates, weights, strict=True):
        for acc, a in zip(out, update, strict=True):
            acc += np.asarray(a, np.float64) * (w / total)
    return out


def same_shapes(arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> bool:
    """True when ``arrays`` match ``reference`` in count, shapes and (float) kind."""
    return len(arrays) == len(reference) and all(
        np.shape(a) == np.shape(r) and np.issubdtype(np.asarray(a).dtype, np.floating)
        for a, r in zip(arrays, reference, strict=True)
    )
