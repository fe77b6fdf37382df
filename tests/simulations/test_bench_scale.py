"""The scale benchmark's data, tables and plot (the runs themselves are in the --quick suite test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulations import bench_scale as bs


def _cell(name: str, clients: int, seconds: float | None) -> bs.Cell:
    return bs.Cell(name, clients, seconds, startup=30.0 if seconds else None, peak_rss_mb=2048.0, rounds=4,
                   accuracy=0.5, error=None if seconds else "exit status 1")  # fmt: skip


def test_synthetic_data_has_the_population_times_examples_per_client(tmp_path: Path) -> None:
    path = bs.synthetic_npz(tmp_path / "s.npz", clients=30, per_client=10, seed=0)
    with np.load(path) as data:
        assert data["x_train"].shape == (300, 8, 8, 1) and data["x_train"].dtype == np.uint8
        assert data["x_test"].shape[0] == bs.TEST_EXAMPLES and set(np.unique(data["y_train"])) == set(range(10))
    stamp = path.stat().st_mtime_ns
    assert bs.synthetic_npz(path, clients=30, per_client=10, seed=0).stat().st_mtime_ns == stamp  # written once


def test_tables_give_ratios_to_the_limit_and_name_failures(tmp_path: Path) -> None:
    cells = [_cell("ours", 10, 0.5), _cell("ours", 1000, 0.6), _cell("tff", 10, None)]
    text = bs.tables(cells, 0.1, [10, 1000])
    assert "| fedmodel on Flower | 0.500 (5.0x) | 0.600 (6.0x) |" in text
    assert "| plain TFF | failed |  |" in text
    assert "**0.100 s**" in text and "| fedmodel on Flower | 2,048 | 2,048 |" in text
    assert "Central limit: not measured." in bs.tables(cells, None, [10, 1000])
    png = bs.plot(cells, 0.1, tmp_path / "scale.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
