"""Which clients take part in a round of a client-level DP run, drawn the way the accountant assumes.

Flower's strategies pick exactly ``m`` nodes with Python's global ``random`` (which ``--seed`` seeds).
For client-level DP the server samples itself, from an OS-entropy generator
(:func:`fedmodel.privacy.randomness.numpy_rng`):

- :class:`~fedmodel.privacy.accounting.PoissonSampling`: each available client independently with
  probability ``q`` (so a round may have no client at all, and still releases noise);
- :class:`~fedmodel.privacy.accounting.FixedSizeSampling`: exactly ``m`` clients, uniformly without
  replacement.

The strategy then sees only the sampled nodes, through :class:`SampledGrid`, and is configured to take
every node it sees (``fraction_train = 1``, no minimum).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from fedmodel.privacy.accounting import FixedSizeSampling, PoissonSampling


def sample_clients(
    node_ids: Sequence[int], sampling: PoissonSampling | FixedSizeSampling, *, rng: np.random.Generator
) -> list[int]:
    """The node ids that take part in this round (sorted), drawn as ``sampling`` says."""
    ids = sorted(int(n) for n in node_ids)
    if isinstance(sampling, PoissonSampling):
        keep = rng.random(len(ids)) < sampling.rate
        return [n for n, k in zip(ids, keep, strict=True) if k]
    if len(ids) < sampling.size:
        raise RuntimeError(f"fixed-size sampling needs {sampling.size} available clients, only {len(ids)} are")
    chosen = rng.choice(len(ids), size=sampling.size, replace=False)
    return sorted(ids[i] for i in chosen)


class QuorumError(RuntimeError):
    """Fewer nodes than a round needs were connected when the wait ran out."""


def wait_for_nodes(
    grid: Any,
    minimum: int,
    *,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] | None = None,
) -> list[int]:
    """The connected node ids, once at least ``minimum`` are connected.

    Raises :class:`QuorumError` when ``timeout`` seconds pass first (``None``: wait without limit).
    Progress is logged when the count changes and every 30 seconds.
    """
    start = clock()
    last: tuple[int, int] | None = None
    while len(ids := [int(n) for n in grid.get_node_ids()]) < minimum:
        waited = clock() - start
        if timeout is not None and waited >= timeout:
            raise QuorumError(
                f"only {len(ids)} of the {minimum} clients a round needs (min-available-clients) connected "
                f"within {timeout:g} s (available-timeout)"
            )
        if log is not None and (len(ids), int(waited) // 30) != last:
            last = (len(ids), int(waited) // 30)
            log(f"waiting for clients: {len(ids)} of {minimum} connected ({waited:.0f} s)")
        sleep(1.0)
    return ids


class SampledGrid:
    """A view of a Flower ``Grid`` that shows only the sampled nodes; everything else is delegated."""

    def __init__(self, grid: Any, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
