"""User-supplied ``.npz`` files with ``x_train, y_train, x_test, y_test`` arrays.

Inputs are converted by :func:`fedmodel.data.arrays.images_to_unit_float` (uint8 is divided by 255,
``(N, H, W)`` gains a channel axis) and labels by :func:`fedmodel.data.arrays.labels_to_int64`.
``num_classes`` is the file's ``num_classes`` scalar when it holds one (public metadata, declared by
whoever made the file); otherwise ``max(label) + 1`` over both splits, which is read from the labels and
therefore marked in ``info.read_from_data`` (no privacy ledger covers it).
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fedmodel.data.arrays import images_to_unit_float, labels_to_int64
from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.errors import ConfigError

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")

#: What numpy and zipfile raise on a damaged archive (truncated, corrupted, an object array without pickle).
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,
    MemoryError,
)


def read_npz_arrays(path: str | os.PathLike[str], *, name: str) -> dict[str, np.ndarray]:
    """Read the four arrays of a dataset ``.npz`` file (no pickles are loaded), all finite.

    Raises
    ------
    ConfigError
        When the file is missing, not a readable ``.npz`` (not a zip archive, truncated or damaged, an
        object array that would need pickle), lacks one of :data:`NPZ_KEYS`, or an array holds NaN or Inf.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{name}: expected an .npz file at {p}, but no such file exists")
    _check_zip_magic(p, name=name)
    key: str | None = None
    try:
        with np.load(p, allow_pickle=False) as data:
            found = sorted(data.files)
            missing = [k for k in NPZ_KEYS if k not in found]
            if missing:
                raise ConfigError(f"{name}: {p} must contain keys {list(NPZ_KEYS)}; missing {missing}, found {found}")
            arrays: dict[str, np.ndarray] = {}
            for key in (*NPZ_KEYS, "num_classes"):
                if key in found:
                    arrays[key] = np.asarray(data[key])
    except _UNREADABLE as exc:
        if isinstance(exc, ConfigError):
            raise
        if "allow_pickle" in str(exc):
            what = f"array {key!r} holds Python objects, which only pickle could load, and pickles are refused"
        else:
            where = f"array {key!r}: " if key is not None else ""
            what = f"truncated or damaged: {where}{type(exc).__name__}: {exc}"
        raise _unreadable(name, p, what) from exc
    for key, array in arrays.items():
        _check_finite(array, name=name, key=key)
    return arrays


def _check_finite(array: np.ndarray, *, name: str, key: str) -> None:
    """Refuse NaN and Inf: they would train silently into a NaN model (or be clipped into noise under DP)."""
    if not np.issubdtype(array.dtype, np.inexact):
        return  # integers and booleans are always finite
    nan = int(np.count_nonzero(np.isnan(array)))
    inf = int(np.count_nonzero(np.isinf(array)))
    if nan or inf:
        raise ConfigError(
            f"{name}: array {key!r} holds {nan + inf} non-finite values ({nan} NaN, {inf} Inf) of {array.size}; "
            "expected finite numbers"
        )


def _unreadable(name: str, path: Path, what: str) -> ConfigError:
    where = "" if name == path.name else f" at {path}"
    return ConfigError(f"{name}: not a readable .npz{where} ({what})")


def _check_zip_magic(path: Path, *, name: str) -> None:
    """An ``.npz`` is a zip archive; anything else would reach numpy's pickle fallback, which is refused."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise _unreadable(name, path, str(exc.strerror or exc)) from exc
    if head.startswith(b"PK"):
        return
    if head.startswith(b"\x93NUMPY"):
        what = "it holds a single .npy array; save the arrays with numpy.savez"
    elif not head:
        what = "the file is empty"
    else:
        what = f"expected a zip archive as numpy.savez writes, but the file starts with {head!r}"
    raise _unreadable(name, path, what)


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Load a classification dataset from a user ``.npz`` file.

    Parameters
    ----------
    path : str or os.PathLike
        File with keys ``x_train, y_train, x_test, y_test``.

    Returns
    -------
    Dataset
        ``info.name`` is the file name; ``info.input_shape`` and ``info.num_classes`` are inferred.
    """
    p = Path(path).expanduser()
    arrays = read_npz_arrays(p, name=p.name)
    x_train = images_to_unit_float(arrays["x_train"], name=p.name)
    x_test = images_to_unit_float(arrays["x_test"], name=p.name)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"{p.name}: x_train and x_test examples must have the same shape, "
            f"got {x_train.shape[1:]} and {x_test.shape[1:]}"
        )
    y_train = labels_to_int64(arrays["y_train"], name=p.name)
    y_test = labels_to_int64(arrays["y_test"], name=p.name)
    labels = np.concatenate([y_train, y_test])
    if labels.size == 0:
        raise ConfigError(f"{p.name}: expected at least one label, got empty y_train and y_test")
    read_from_data: tuple[str, ...] = ()
    if "num_classes" in arrays:
        declared = arrays["num_classes"]
        if declared.shape != () or not np.issubdtype(declared.dtype, np.integer) or int(declared) < 2:
            raise ConfigError(f"{p.name}: num_classes must be an integer scalar >= 2, got {declared!r}")
        num_classes = int(declared)
        if int(labels.max()) >= num_classes:
            raise ConfigError(f"{p.name}: labels must be < num_classes={num_classes}, got a label {int(labels.max())}")
    else:
        num_classes = int(labels.max()) + 1  # labels are >= 0, so this counts every distinct label
        read_from_data = ("num_classes",)
    info = DatasetInfo(
        name=p.name,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=num_classes,
        task="classification",
        source=str(p.resolve()),
        read_from_data=read_from_data,
    )
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, info=info)
