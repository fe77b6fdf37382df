"""Split example indices among simulated federated clients.

Every scheme is deterministic given ``seed`` and assigns every example index to exactly one client.
:func:`partition` returns one sorted int64 index array per client.

Schemes
-------
``iid``
    Seeded permutation cut into ``num_clients`` near-equal parts (sizes differ by at most one).
``dirichlet``
    Label skew: for each class, client shares are drawn from ``Dirichlet(alpha * 1)`` and that
    class's examples are cut accordingly (Hsu, Qi & Brown 2019, arXiv:1909.06335; Yurochkin et al.
    2019). Small ``alpha`` (0.1) gives few classes per client; large ``alpha`` (100) is near IID.
``shards``
    Pathological non-IID of McMahan et al. 2017 (arXiv:1602.05629): sort by label, cut into
    ``num_clients * shards_per_client`` shards, give each client ``shards_per_client`` random shards.
    Shards are near-equal (sizes differ by at most one) when the count does not divide evenly.
``quantity``
    Quantity skew: client sizes ``min_size + Multinomial(n - num_clients * min_size, p)`` with
    ``p ~ Dirichlet(alpha * 1)``; examples are assigned IID (Li et al. 2021, arXiv:2102.02079).
``natural``
    One client per distinct ``groups`` value (e.g. a speaking role), clients ordered by sorted group
    value. ``num_clients`` must equal the number of distinct groups: natural data is not merged or
    dropped silently; sample clients per round instead.

``min_size``: the Dirichlet scheme redraws up to ``MAX_DIRICHLET_DRAWS`` times, then repairs by moving
random examples from the largest clients; every other scheme meets it by construction or raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from fedmodel.errors import ConfigError

Scheme = Literal["iid", "dirichlet", "shards", "quantity", "natural"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
MAX_DIRICHLET_DRAWS = 20


@dataclass(frozen=True)
class PartitionConfig:
    """How to split a dataset among clients.

    Parameters
    ----------
    scheme : {"iid", "dirichlet", "shards", "quantity", "natural"}
        Partitioning scheme; see the module docstring.
    num_clients : int
        Number of clients, >= 1.
    seed : int
        Seed of the scheme's random draws, >= 0.
    alpha : float
        Dirichlet concentration (> 0) for ``dirichlet`` (label skew) and ``quantity`` (size skew).
        0.5 is a common moderate-skew setting (Hsu et al. 2019 sweep 0.05-100).
    shards_per_client : int
        Shards per client for ``shards``; McMahan et al. 2017 use 2.
    min_size : int
        Smallest allowed client, >= 0.
    """

    scheme: Scheme
    num_clients: int
    seed: int = 0
    alpha: float = 0.5
    shards_per_client: int = 2
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"partition scheme must be one of {list(SCHEMES)}, got {self.scheme!r}")
        if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
            raise ConfigError(f"num_clients must be an int >= 1, got {self.num_clients!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"alpha must be a finite number > 0, got {self.alpha}")
        if self.shards_per_client < 1:
            raise ConfigError(f"shards_per_client must be >= 1, got {self.shards_per_client}")
        if self.min_size < 0:
            raise ConfigError(f"min_size must be >= 0, got {self.min_size}")


def partition(
    config: PartitionConfig,
    *,
    labels: np.ndarray | None = None,
    num_examples: int | None = None,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Split ``range(n)`` among ``config.num_clients`` clients.

    Parameters
    ----------
    config : PartitionConfig
        Scheme and its parameters.
    labels : numpy.ndarray or None
        Integer class label per example; required by ``dirichlet`` and ``shards``.
    num_examples : int or None
        Number of examples; needed only when neither ``labels`` nor ``groups`` is given.
    groups : numpy.ndarray or None
        Natural-partition key per example; required by ``natural``.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted int64 index arrays; their concatenation is a permutation of ``range(n)``.

    Raises
    ------
    ConfigError
        Missing or inconsistent inputs, more clients than examples, or an unreachable ``min_size``.
    """
    n = _num_examples(labels=labels, num_examples=num_examples, groups=groups)
    k = config.num_clients
    if config.scheme != "natural":
        if k > n:
            raise ConfigError(f"num_clients={k} exceeds the number of examples ({n})")
        if k * config.min_size > n:
            raise ConfigError(
                f"min_size={config.min_size} for {k} clients needs {k * config.min_size} examples, got {n}"
            )
    rng = np.random.default_rng(config.seed)
    if config.scheme == "iid":
        parts = _iid(n, k, config.min_size, rng)
    elif config.scheme == "quantity":
        parts = _quantity(n, k, config, rng)
    elif config.scheme == "natural":
        parts = _natural(_need(groups, "groups", config.scheme), k, config.min_size)
    else:
        y = _need(labels, "labels", config.scheme)
        if config.scheme == "dirichlet":
            parts = _dirichlet(_int_labels(y), k, config, rng)
        else:
            parts = _shards(_int_labels(y), k, config, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _num_examples(*, labels: np.ndarray | None, num_examples: int | None, groups: np.ndarray | None) -> int:
    sizes = {
        key: value
        for key, value in (
            ("labels", None if labels is None else len(labels)),
            ("num_examples", num_examples),
            ("groups", None if groups is None else len(groups)),
        )
        if value is not None
    }
    if not sizes:
        raise ConfigError("partition needs labels, groups or num_examples; got none of them")
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"partition inputs disagree on the number of examples: {sizes}")
    n = next(iter(sizes.values()))
    if n < 1:
        raise ConfigError(f"partition needs at least one example, got {n}")
    return n


def _need(array: np.ndarray | None, what: str, scheme: str) -> np.ndarray:
    if array is None:
        raise ConfigError(f"partition scheme {scheme!r} needs {what}=..., got None")
    return np.asarray(array)


def _int_labels(labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    return labels


def _iid(n: int, k: int, min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(n), k))  # sizes n // k or n // k + 1 >= min_size


def _quantity(n: int, k: int, config: PartitionConfig, rng: np.random.Generator) -> list[np.ndarray]:
    shares = rng.dirichlet(np.full(k, config.alpha))
    sizes = config.min_size + rng.multinomial(n - k * config.min_size, shares)
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def _dirichlet(labels: np.ndarray, k: int, config: PartitionConfig, rng: np.random.Generator) -> list[np.ndarray]:
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(k)]
        for idx in by_class:
            shares = rng.dirichlet(np.full(k, config.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(rng.permutation(idx), cuts)):
                parts[client].append(chunk)
        clients = [np.concatenate(p) for p in parts]
        if min(len(c) for c in clients) >= config.min_size:
            return clients
    return _repair(clients, config.min_size, rng)


def _repair(clients: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random examples from the largest clients to those below ``min_size`` (feasible by the caller)."""
    clients = [rng.permutation(c) for c in clients]
    for i in range(len(clients)):
        while len(clients[i]) < min_size:
            donor = int(np.argmax([len(c) for c in clients]))
            take = min(min_size - len(clients[i]), len(clients[donor]) - min_size)
            clients[i] = np.concatenate([clients[i], clients[donor][:take]])
            clients[donor] = clients[donor][take:]
    return clients


def _shards(labels: np.ndarray, k: int, config: PartitionConfig, rng: np.random.Generator) -> list[np.ndarray]:
    num_shards = k * config.shards_per_client
    n = len(labels)
    if num_shards > n:
        raise ConfigError(f"shards: num_clients * shards_per_client = {num_shards} shards exceed the {n} examples")
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]  # by label, random within a label
    shards = np.array_split(order, num_shards)
    if config.min_size > config.shards_per_client * (n // num_shards):
        raise ConfigError(
            f"shards: min_size={config.min_size} exceeds the smallest client "
            f"({config.shards_per_client} shards of {n // num_shards}); lower min_size or shards"
        )
    owners = rng.permutation(num_shards).reshape(k, config.shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in owners]


def _natural(groups: np.ndarray, k: int, min_size: int) -> list[np.ndarray]:
    values, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if k != len(values):
        raise ConfigError(
            f"natural partition has one client per group: num_clients must be {len(values)} (distinct groups), got {k}"
        )
    if counts.min() < min_size:
        small = values[int(np.argmin(counts))]
        raise ConfigError(f"natural: group {small!r} has {counts.min()} examples, fewer than min_size={min_size}")
    return [np.flatnonzero(inverse == g) for g in range(len(values))]
