"""The two types every loader returns: :class:`DatasetInfo` and :class:`Dataset`.

A dataset is four arrays (train and test inputs and targets), a description, and optionally a
*natural partition key* per training example (for example the speaking role of each Shakespeare
window), which :func:`fedmodel.data.partition` uses for the ``"natural"`` scheme.

Conventions
-----------
- Images are float32 in [0, 1] with a trailing channel axis: ``(N, H, W, C)``.
- Classification labels are int64 of shape ``(N,)``.
- Next-token data is int32 token ids: inputs and targets both ``(N, seq_len)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedmodel.errors import ConfigError

Task = Literal["classification", "next-token"]
TASKS: tuple[Task, ...] = ("classification", "next-token")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, independent of its arrays.

    Parameters
    ----------
    name : str
        Registry name (``"digits"``, ``"mnist"``, ...) or the file name for user files.
    input_shape : tuple of int
        Shape of one input example, without the batch axis, e.g. ``(28, 28, 1)`` or ``(80,)``.
    num_classes : int
        Number of classes, or the vocabulary size for next-token data.
    task : {"classification", "next-token"}
        What the targets are.
    source : str
        Where the data came from: a path, ``"scikit-learn bundled"``, ``"generated"``, ...
    class_names : tuple of str or None
        Human-readable class names, one per class, when known.
    vocab : str or None
        For next-token data: the characters, token id ``i`` is ``vocab[i]``.
    read_from_data : tuple of str
        Which of these fields were computed by scanning the (possibly private) examples rather than taken
        from public metadata, e.g. ``("num_classes",)`` for a user ``.npz`` without a declared class count.
        No privacy ledger covers them; run records and reports say so.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    task: Task
    source: str
    class_names: tuple[str, ...] | None = None
    vocab: str | None = None
    read_from_data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("DatasetInfo.name must be a non-empty string, got ''")
        if not self.input_shape or any(int(d) < 1 for d in self.input_shape):
            raise ConfigError(f"input_shape must be a non-empty tuple of positive ints, got {self.input_shape}")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"class_names must have num_classes={self.num_classes} entries, got {len(self.class_names)}"
            )
        if self.vocab is not None and len(self.vocab) != self.num_classes:
            raise ConfigError(f"vocab must have num_classes={self.num_classes} characters, got {len(self.vocab)}")


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays plus their :class:`DatasetInfo`.

    Parameters
    ----------
    x_train, y_train, x_test, y_test : numpy.ndarray
        Inputs and targets; see the module docstring for dtypes and shapes.
    info : DatasetInfo
        Description of the data.
    groups_train : numpy.ndarray or None
        A natural-partition key per training example (e.g. speaker id), or None when the data has none.

    Raises
    ------
    ConfigError
        When lengths disagree, an input shape differs from ``info.input_shape``, or a target is
        outside ``[0, info.num_classes)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo
    groups_train: np.ndarray | None = None

    def __post_init__(self) -> None:
        name = self.info.name
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) != len(y):
                raise ConfigError(f"{name}: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
            if tuple(x.shape[1:]) != tuple(self.info.input_shape):
                raise ConfigError(
                    f"{name}: x_{split} examples must have shape {self.info.input_shape}, got {x.shape[1:]}"
                )
            _check_targets(name, split, y, self.info)
        if self.groups_train is not None and len(self.groups_train) != len(self.x_train):
            raise ConfigError(
                f"{name}: groups_train must have one entry per training example ({len(self.x_train)}), "
                f"got {len(self.groups_train)}"
            )

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return len(self.x_test)


def _check_targets(name: str, split: str, y: np.ndarray, info: DatasetInfo) -> None:
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{name}: y_{split} must hold integers, got dtype {y.dtype}")
    if info.task == "classification" and y.ndim != 1:
        raise ConfigError(f"{name}: y_{split} must have shape (N,) for classification, got {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise ConfigError(
            f"{name}: y_{split} values must lie in [0, {info.num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
