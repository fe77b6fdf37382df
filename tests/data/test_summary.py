"""Label-distribution matrix, text table and PNG chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import (
    PartitionConfig,
    format_label_distribution,
    label_distribution,
    partition,
    plot_label_distribution,
)
from fedmodel.errors import ConfigError


def test_label_distribution_counts_by_hand() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]
    assert label_distribution(parts, labels, 4).tolist() == [[1, 0, 1, 0], [0, 2, 2, 0]]
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 2\)"):
        label_distribution(parts, labels, 2)


def test_matrix_rows_sum_to_client_sizes() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 500)
    parts = partition(PartitionConfig("dirichlet", num_clients=7, seed=1), labels=labels)
    matrix = label_distribution(parts, labels, 10)
    assert matrix.sum(axis=1).tolist() == [len(p) for p in parts]
    assert matrix.sum(axis=0).tolist() == np.bincount(labels, minlength=10).tolist()


def test_format_shows_rows_elision_and_summary() -> None:
    matrix = np.array([[5, 0, 1], [0, 3, 0], [2, 2, 2]])
    table = format_label_distribution(matrix, max_rows=2)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["client", "size", "classes"]
    assert lines[1].split() == ["0", "6", "2", "5", "0", "1"]
    assert lines[3] == "... (1 more clients)"
    assert lines[-1] == ("3 clients, 15 examples; size mean 5.0 min 3 max 6; classes per client mean 2.00 of 3")


def test_format_many_classes_lists_top_classes() -> None:
    matrix = np.zeros((1, 50), dtype=np.int64)
    matrix[0, [7, 30, 42]] = [4, 9, 1]
    row = format_label_distribution(matrix).splitlines()[1]
    assert row.split()[-3:] == ["30:9", "7:4", "42:1"]


def test_plot_writes_a_complete_png(tmp_path: Path) -> None:
    import matplotlib.image

    matrix = np.random.default_rng(0).integers(0, 50, (12, 10))
    out = plot_label_distribution(matrix, tmp_path / "dist.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.png"]  # no temp file left behind


def test_plot_rejects_missing_directory_and_bad_matrix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        plot_label_distribution(np.ones((2, 2), int), tmp_path / "nope" / "x.png")
    with pytest.raises(ConfigError, match=r"got shape \(3,\)"):
        plot_label_distribution(np.ones(3, int), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
