"""A client's private shard of the configured dataset, and the server's held-out test set.

In simulation every client process loads the dataset once and keeps it (and its partition) in memory,
so a client call costs only its training. In a real deployment a client reads its own file instead
(``node_config["data-path"]``, an ``.npz`` with ``x_train, y_train`` and optionally ``x_test, y_test``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from fedmodel.data import Dataset, PartitionConfig, load_dataset, partition
from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig


@dataclasses.dataclass(frozen=True)
class Shard:
    """One client's examples: training part and a small local evaluation part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


@functools.lru_cache(maxsize=4)
def _dataset(name: str, path: str | None, seed: int, seq_len: int, max_examples: int | None) -> Dataset:
    return load_dataset(name, path=path, seed=seed, seq_len=seq_len, max_examples=max_examples)


def dataset_for(config: FederatedConfig) -> Dataset:
    """The configured dataset (cached per process)."""
    return _dataset(config.dataset, config.data_path, config.seed, config.seq_len, config.max_examples)


@functools.lru_cache(maxsize=4)
def _partitions(data_key: tuple[object, ...], scheme: PartitionConfig) -> tuple[np.ndarray, ...]:
    data = _dataset(*data_key)
    labels = data.y_train if data.info.task == "classification" else None
    return tuple(partition(scheme, labels=labels, num_examples=len(data.x_train), groups=data.groups_train))


def partitions_for(config: FederatedConfig) -> tuple[np.ndarray, ...]:
    """Index arrays of every client's training examples (cached per process)."""
    scheme = PartitionConfig(
        config.partition,
        num_clients=config.num_clients,
        seed=config.seed,
        alpha=config.alpha,
        shards_per_client=config.shards_per_client,
    )
    data_key = (config.dataset, config.data_path, config.seed, config.seq_len, config.max_examples)
    return _partitions(data_key, scheme)


def client_shard(config: FederatedConfig, partition_id: int, *, eval_fraction: float = 0.1) -> Shard:
    """Client ``partition_id``'s shard; the last ``eval_fraction`` of it (seeded) is for local evaluation."""
    if not 0 <= partition_id < config.num_clients:
        raise ConfigError(f"partition-id must be in [0, {config.num_clients}), got {partition_id}")
    data = dataset_for(config)
    train, held = client_split(config, partition_id, eval_fraction=eval_fraction)
    return Shard(data.x_train[train], data.y_train[train], data.x_train[held], data.y_train[held])


def client_split(config: FederatedConfig, partition_id: int, *, eval_fraction: float = 0.1) -> tuple[np.ndarray, ...]:
    """Indices into the training set of client ``partition_id``'s (training, local evaluation) examples."""
    idx = partitions_for(config)[partition_id]
    order = np.random.default_rng([config.seed, partition_id]).permutation(len(idx))
    n_eval = int(len(idx) * eval_fraction) if len(idx) >= 10 else 0
    return idx[np.sort(order[n_eval:])], idx[np.sort(order[:n_eval])]


def file_shard(path: str | Path, *, eval_fraction: float = 0.1, seed: int = 0) -> Shard:
    """A client's own ``.npz`` file (real deployments): ``x_train, y_train`` and optional ``x_test, y_test``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"client data file {file} does not exist")
    with np.load(file) as npz:
        if "x_train" not in npz or "y_train" not in npz:
            raise ConfigError(f"{file} must hold x_train and y_train; it has {', '.join(npz.files)}")
        x, y = npz["x_train"], npz["y_train"]
        if "x_test" in npz and "y_test" in npz:
            return Shard(x, y, npz["x_test"], npz["y_test"])
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = int(len(x) * eval_fraction)
    return Shard(x[order[n_eval:]], y[order[n_eval:]], x[order[:n_eval]], y[order[:n_eval]])
