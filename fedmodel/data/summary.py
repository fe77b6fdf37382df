"""Describe a partition: a clients x classes count matrix, a text table, and a PNG chart."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedmodel.atomic import atomic_write_with
from fedmodel.errors import ConfigError

_PER_CLASS_COLUMNS = 10  # up to this many classes the table shows every class; beyond, the top 3


def label_distribution(partitions: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Count each client's examples per class.

    Parameters
    ----------
    partitions : list of numpy.ndarray
        Index arrays, one per client (as returned by :func:`fedmodel.data.partition`).
    labels : numpy.ndarray
        Integer class label of every example, ``(N,)``.
    num_classes : int
        Number of classes; labels must lie in ``[0, num_classes)``.

    Returns
    -------
    numpy.ndarray
        int64 matrix of shape ``(len(partitions), num_classes)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    matrix = np.zeros((len(partitions), num_classes), dtype=np.int64)
    for i, idx in enumerate(partitions):
        matrix[i] = np.bincount(labels[np.asarray(idx, dtype=np.int64)], minlength=num_classes)
    return matrix


def format_label_distribution(matrix: np.ndarray, *, max_rows: int = 20) -> str:
    """A text table of a :func:`label_distribution` matrix with a summary line.

    Rows show client, size, number of classes held, and per-class counts (up to 10 classes) or
    the three largest classes as ``class:count``. More than ``max_rows`` clients are elided.
    """
    matrix = _check_matrix(matrix)
    if max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
    k, c = matrix.shape
    sizes = matrix.sum(axis=1)
    held = (matrix > 0).sum(axis=1)
    per_class = c <= _PER_CLASS_COLUMNS
    width = max(5, len(str(int(matrix.max(initial=0)))))
    header = f"{'client':>6} {'size':>7} {'classes':>7}  " + (
        " ".join(f"{j:>{width}}" for j in range(c)) if per_class else "top classes (class:count)"
    )
    lines = [header]
    for i in range(min(k, max_rows)):
        row = matrix[i]
        if per_class:
            detail = " ".join(f"{int(v):>{width}}" for v in row)
        else:
            top = np.argsort(-row, kind="stable")[:3]
            detail = " ".join(f"{int(j)}:{int(row[j])}" for j in top if row[j] > 0)
        lines.append(f"{i:>6} {int(sizes[i]):>7} {int(held[i]):>7}  {detail}")
    if k > max_rows:
        lines.append(f"... ({k - max_rows} more clients)")
    lines.append(
        f"{k} clients, {int(sizes.sum())} examples; size mean {sizes.mean():.1f} min {int(sizes.min())} "
        f"max {int(sizes.max())}; classes per client mean {held.mean():.2f} of {c}"
    )
    return "\n".join(lines)


def plot_label_distribution(matrix: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a PNG of stacked horizontal bars (one per client, coloured by class).

    The file is written to a temporary name beside ``path`` and renamed, so ``path`` is either the
    complete PNG or untouched. Uses matplotlib's Agg canvas, not pyplot, so no global state changes.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = _check_matrix(matrix)
    out = Path(path)
    if not out.parent.is_dir():
        raise ConfigError(f"plot directory {out.parent} does not exist; expected an existing directory")
    k, c = matrix.shape
    fig = Figure(figsize=(8, min(2 + 0.25 * k, 40)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if c <= 10 else "tab20" if c <= 20 else "viridis"]
    left = np.zeros(k)
    rows = np.arange(k)
    for j in range(c):
        color = cmap(j) if c <= 20 else cmap(j / max(c - 1, 1))
        ax.barh(rows, matrix[:, j], left=left, color=color, label=str(j), height=0.8)
        left += matrix[:, j]
    ax.set_title(f"Label distribution: {k} clients, {c} classes")
    ax.set_xlabel("examples")
    ax.set_ylabel("client")
    ax.invert_yaxis()
    if c <= 20:
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    return atomic_write_with(out, lambda f: fig.savefig(f, format="png", dpi=100))


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ConfigError(f"expected a (clients, classes) matrix with both sides >= 1, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.integer) or matrix.min() < 0:
        raise ConfigError(f"expected non-negative integer counts, got dtype {matrix.dtype}")
    return matrix
