"""Partition schemes: hypothesis properties of every scheme, plus hand-checked cases and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmodel.data import PartitionConfig, label_distribution, partition
from fedmodel.errors import ConfigError

FAST = settings(max_examples=50, deadline=None)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Labels for n examples over c classes, and a feasible client count."""
    n = draw(st.integers(min_value=1, max_value=300))
    c = draw(st.integers(min_value=1, max_value=10))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    labels = np.random.default_rng(seed).integers(0, c, n)
    k = draw(st.integers(min_value=1, max_value=min(n, 20)))
    return labels, k


def _assert_exact_cover(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    assert all(p.dtype == np.int64 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@FAST
@given(
    data=labelled(),
    scheme=st.sampled_from(["iid", "dirichlet", "quantity"]),
    alpha=st.floats(0.05, 100),
    seed=st.integers(0, 2**16),
)
def test_every_example_in_exactly_one_client_and_min_size_met(
    data: tuple[np.ndarray, int], scheme: str, alpha: float, seed: int
) -> None:
    labels, k = data
    config = PartitionConfig(scheme, num_clients=k, seed=seed, alpha=alpha)  # type: ignore[arg-type]
    parts = partition(config, labels=labels)
    _assert_exact_cover(parts, len(labels), k)
    assert min(len(p) for p in parts) >= 1
    again = partition(config, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@FAST
@given(n=st.integers(1, 1000), k=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_iid_sizes_differ_by_at_most_one(n: int, k: int, seed: int) -> None:
    k = min(k, n)
    parts = partition(PartitionConfig("iid", num_clients=k, seed=seed), num_examples=n)
    _assert_exact_cover(parts, n, k)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(
    k=st.integers(1, 10),
    spc=st.integers(1, 4),
    shard_size=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_shards_hold_at_most_shards_per_client_labels_when_classes_align(
    k: int, spc: int, shard_size: int, seed: int
) -> None:
    num_shards = k * spc
    # one class per shard: every class has exactly shard_size examples, shuffled
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(num_shards), shard_size))
    parts = partition(PartitionConfig("shards", num_clients=k, seed=seed, shards_per_client=spc), labels=labels)
    _assert_exact_cover(parts, len(labels), k)
    assert all(len(p) == spc * shard_size for p in parts)
    assert all(len(np.unique(labels[p])) == spc for p in parts)


@FAST
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=15),
    seed=st.integers(0, 2**16),
)
def test_natural_gives_each_client_exactly_one_whole_group(sizes: list[int], seed: int) -> None:
    names = np.array([f"role{i}" for i in range(len(sizes))])
    groups = np.random.default_rng(seed).permutation(np.repeat(names, sizes))
    parts = partition(PartitionConfig("natural", num_clients=len(sizes)), groups=groups)
    _assert_exact_cover(parts, len(groups), len(sizes))
    assert [len(np.unique(groups[p])) for p in parts] == [1] * len(sizes)
    assert sorted(len(p) for p in parts) == sorted(sizes)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "quantity"])
def test_randomized_schemes_depend_on_the_seed(scheme: str) -> None:
    labels = np.repeat(np.arange(10), 50)
    a = partition(PartitionConfig(scheme, num_clients=10, seed=0), labels=labels)  # type: ignore[arg-type]
    b = partition(PartitionConfig(scheme, num_clients=10, seed=1), labels=labels)  # type: ignore[arg-type]
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = np.repeat(np.arange(10), 200)

    def classes_held(alpha: float) -> float:
        config = PartitionConfig("dirichlet", num_clients=20, alpha=alpha, seed=7)
        counts = label_distribution(partition(config, labels=labels), labels, 10)
        # classes making up at least 5% of a client's data
        return float((counts / counts.sum(axis=1, keepdims=True) >= 0.05).sum(axis=1).mean())

    assert classes_held(0.05) < 3.5 < 8.5 < classes_held(100.0)


def test_dirichlet_repairs_to_min_size() -> None:
    labels = np.repeat(np.arange(2), 50)
    parts = partition(PartitionConfig("dirichlet", num_clients=20, alpha=0.01, min_size=4), labels=labels)
    assert min(len(p) for p in parts) >= 4
    _assert_exact_cover(parts, 100, 20)


def test_quantity_skew_keeps_labels_iid_but_sizes_vary() -> None:
    labels = np.repeat(np.arange(5), 400)
    parts = partition(PartitionConfig("quantity", num_clients=10, alpha=0.3, seed=2, min_size=10), labels=labels)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 10 and sizes.max() > 3 * sizes.min()
    big = parts[int(np.argmax(sizes))]
    assert np.all(np.abs(np.bincount(labels[big], minlength=5) / len(big) - 0.2) < 0.06)


@pytest.mark.parametrize(
    ("config", "inputs", "message"),
    [
        (
            {"scheme": "iid", "num_clients": 5},
            {"num_examples": 3},
            "num_clients=5 exceeds the number of examples",
        ),
        ({"scheme": "natural", "num_clients": 2}, {"num_examples": 3}, "needs groups"),
        ({"scheme": "dirichlet", "num_clients": 2}, {"num_examples": 3}, "needs labels"),
        ({"scheme": "natural", "num_clients": 2}, {"groups": np.array([1, 2, 3])}, "num_clients must be 3"),
        ({"scheme": "iid", "num_clients": 2, "min_size": 3}, {"num_examples": 5}, "needs 6 examples, got 5"),
        (
            {"scheme": "shards", "num_clients": 3, "shards_per_client": 2},
            {"labels": np.zeros(5, int)},
            "6 shards",
        ),
        ({"scheme": "iid", "num_clients": 2}, {"labels": np.zeros(4, int), "num_examples": 5}, "disagree"),
        ({"scheme": "iid", "num_clients": 2}, {}, "got none of them"),
    ],
)
def test_bad_partition_inputs_raise(config: dict[str, object], inputs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        partition(PartitionConfig(**config), **inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "random", "num_clients": 2}, "scheme must be one of"),
        ({"scheme": "iid", "num_clients": 0}, "num_clients must be an int >= 1, got 0"),
        ({"scheme": "iid", "num_clients": 2, "alpha": 0.0}, "alpha must be a finite number > 0, got 0.0"),
        ({"scheme": "iid", "num_clients": 2, "shards_per_client": 0}, "shards_per_client must be >= 1"),
        ({"scheme": "iid", "num_clients": 2, "min_size": -1}, "min_size must be >= 0"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PartitionConfig(**kwargs)  # type: ignore[arg-type]
