"""Figures for the benchmark scripts: Agg canvases, no pyplot state, written where the suite asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(ncols: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure on an Agg canvas (no display, no global pyplot figure) and its ``ncols`` axes in one row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def save(fig: Any, path: Path | str) -> Path:
    """Lay out and write ``fig`` as a PNG at ``path`` (its folder created); the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
