"""Each client host's own data file in a multi-machine deployment, and what the run's model expects of it.

A deployed client never opens the server's dataset. The server sends a :class:`DataSpec` (input shape,
classes, task, input dtype) in every round's config record; the client opens only its own ``.npz``
(``node_config["data-path"]``) with :func:`load_node_data`, which checks the file against the spec.

A file that does not fit raises :class:`NodeDataError`: a short ``code``, a ``message`` without local
paths or data values (safe to send to the server) and a ``local_detail`` for the node's own log.

:func:`export_shards` cuts a configured dataset into one ``client-NNN.npz`` per client plus a
``manifest.json`` (for trials and for operators who distribute the shards themselves);
:func:`verify_manifest` checks the files against it after copying.

Node file format: ``x_train, y_train`` and optionally ``x_test, y_test`` (both or neither), never pickles.
Inputs are converted to the spec's dtype; for float models, ``uint8`` inputs are divided by 255 (the
convention of :mod:`fedmodel.data.files`). Labels are returned as int64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmodel.data import Dataset
from fedmodel.data.dataset import TASKS, Task
from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.shards import Shard, client_shard, dataset_for

if TYPE_CHECKING:
    from flwr.common.typing import ConfigRecordValues

FORMAT = "fedmodel-node-data"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: ConfigRecord keys of a :class:`DataSpec`.
SPEC_KEYS: tuple[str, ...] = ("data-input-shape", "data-num-classes", "data-task", "data-x-dtype")
#: Codes of :class:`NodeDataError`.
CODES: tuple[str, ...] = (
    "missing", "unreadable", "missing-arrays", "empty", "shape", "dtype", "label-range", "input-range", "non-finite",
)  # fmt: skip


def client_file_name(partition_id: int) -> str:
    """``client-007.npz`` for partition 7."""
    return f"client-{partition_id:03d}.npz"


# -- the spec --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a client must know about the run's model to check and feed its own data.

    Attributes
    ----------
    input_shape:
        One example's shape without the batch axis, e.g. ``(8, 8, 1)`` or ``(80,)``.
    num_classes:
        Classes, or the vocabulary size for next-token data (labels lie in ``[0, num_classes)``).
    task:
        ``"classification"`` (labels ``(N,)``) or ``"next-token"`` (inputs and targets ``(N, *input_shape)``,
        token ids in ``[0, num_classes)``).
    x_dtype:
        numpy name of the inputs' dtype on the server (``"float32"`` for images, ``"int32"`` for token ids);
        a client's inputs are converted to it.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    task: Task = "classification"
    x_dtype: str = "float32"

    def __post_init__(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, tuple | list) or not shape or not all(_is_int(d) and d >= 1 for d in shape):
            raise ConfigError(f"input shape must be a non-empty list of positive integers, got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in shape))
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ConfigError(f"number of classes must be an integer >= 1, got {self.num_classes!r}")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        try:
            kind = np.dtype(self.x_dtype).kind
        except (TypeError, ValueError):
            kind = ""
        if not isinstance(self.x_dtype, str) or kind not in "fiu" or not kind:
            raise ConfigError(
                f"input dtype must name a real numeric numpy dtype (float32, int32, ...), got {self.x_dtype!r}"
            )
        object.__setattr__(self, "x_dtype", np.dtype(self.x_dtype).name)
        if self.task == "next-token" and self.x_kind == "f":
            raise ConfigError(f"next-token inputs are integer token ids; got input dtype {self.x_dtype}")

    @property
    def x_kind(self) -> str:
        """``"f"`` for float inputs, ``"i"``/``"u"`` for integer (token id) inputs."""
        return np.dtype(self.x_dtype).kind

    @classmethod
    def of(cls, dataset: Dataset) -> DataSpec:
        """The spec of a loaded dataset (on the server)."""
        info = dataset.info
        return cls(tuple(info.input_shape), int(info.num_classes), info.task, np.dtype(dataset.x_train.dtype).name)

    def to_config(self) -> dict[str, ConfigRecordValues]:
        """Flat scalars (int and str) for a Flower ConfigRecord (the shape as a JSON list string)."""
        return {
            "data-input-shape": json.dumps(list(self.input_shape)),
            "data-num-classes": self.num_classes,
            "data-task": self.task,
            "data-x-dtype": self.x_dtype,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DataSpec:
        """Read a spec from a round's ConfigRecord (or a manifest's ``spec``); other keys are ignored.

        Raises
        ------
        ConfigError
            A key is missing or holds something other than what :meth:`to_config` writes.
        """
        missing = [k for k in SPEC_KEYS[:3] if k not in config]
        if missing:
            raise ConfigError(
                f"the run's data spec needs keys {', '.join(SPEC_KEYS)}; missing {', '.join(missing)} "
                "(is the server running an older fedmodel?)"
            )
        raw_shape = config["data-input-shape"]
        try:
            shape = json.loads(raw_shape) if isinstance(raw_shape, str) else None
        except json.JSONDecodeError:
            shape = None
        if not isinstance(shape, list) or not shape or not all(_is_int(d) and d >= 1 for d in shape):
            raise ConfigError(
                f'data-input-shape must be a JSON list of positive integers such as "[8, 8, 1]", got {raw_shape!r}'
            )
        classes = config["data-num-classes"]
        if not _is_int(classes) or classes < 1:
            raise ConfigError(f"data-num-classes must be an integer >= 1, got {classes!r}")
        task = config["data-task"]
        if task not in TASKS:
            raise ConfigError(f"data-task must be one of {', '.join(TASKS)}, got {task!r}")
        x_dtype = config.get("data-x-dtype", "int32" if task == "next-token" else "float32")
        if not isinstance(x_dtype, str):
            raise ConfigError(f'data-x-dtype must be a numpy dtype name such as "float32", got {x_dtype!r}')
        try:
            return cls(tuple(shape), int(classes), task, x_dtype)
        except ConfigError as err:
            raise ConfigError(f"invalid data spec in the run's config: {err}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# -- errors ---------------------------------------------------------------------------------------------------


class NodeDataError(ConfigError):
    """A node's data file does not fit the run.

    Attributes
    ----------
    code:
        One of :data:`CODES`.
    message:
        What was expected and what was received, without local paths or data values: safe to send to the server.
    local_detail:
        The message with the file's path and any low-level cause, for the node's own log (also ``str(err)``).
    """

    def __init__(self, code: str, message: str, local_detail: str) -> None:
        super().__init__(local_detail)
        self.code = code
        self.message = message
        self.local_detail = local_detail


def _fail(code: str, path: Path, message: str, detail: str = "") -> NodeDataError:
    return NodeDataError(code, message, f"{path}: {message}" + (f" [{detail}]" if detail else ""))


# -- reading and checking a node's file -----------------------------------------------------------------------


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    """All four arrays (those present) of ``file``, without pickles; NodeDataError otherwise."""
    if not file.is_file():
        what = "a directory" if file.is_dir() else "nothing"
        raise _fail("missing", file, "no data file at this node's data-path", f"found {what} there")
    not_npz = "the data file is not a readable .npz archive (expected numpy.savez output with x_train, y_train)"
    arrays: dict[str, np.ndarray] = {}
    names: list[str] = []
    current = ""
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _fail("unreadable", file, not_npz, "a single .npy array, not an .npz archive")
        with loaded as npz:
            names = list(npz.files)
            for current in ("x_train", "y_train", "x_test", "y_test"):
                if current in names:
                    arrays[current] = np.asarray(npz[current])
    except NodeDataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            if current:
                message = f"array {current} holds Python objects, which are never unpickled; expected numeric arrays"
            else:
                message = f"{not_npz}; reading it would need unpickling, which is never done"
            raise _fail("unreadable", file, message, f"{type(exc).__name__}: {exc}") from exc
        raise _fail("unreadable", file, not_npz, f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError (truncated or corrupted archives)
        message = f"{not_npz}; reading {current} failed" if current else not_npz
        raise _fail("unreadable", file, message, f"{type(exc).__name__}: {exc}") from exc
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        plain = sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", n))[:10]
        others = len(names) - len(plain)
        shown = ", ".join([*plain, *([f"{others} other arrays"] if others else [])]) or "no arrays"
        lacks = ", ".join(missing)
        raise _fail(
            "missing-arrays", file, f"the data file must hold x_train and y_train; it lacks {lacks} (has {shown})"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        have, lack = ("x_test", "y_test") if "x_test" in arrays else ("y_test", "x_test")
        raise _fail("missing-arrays", file, f"the data file has {have} but no {lack}; expected both or neither")
    return arrays


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(int(d) for d in shape))


def _batch_shape(shape: tuple[int, ...], first: str | None = None) -> str:
    """``(N, 80)`` for the shape of a whole array: ``first`` (or the array's length) then one example's shape."""
    dims = [first] if first is not None else []
    dims += [str(int(d)) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_split(file: Path, spec: DataSpec, split: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one split's inputs and labels against the spec; return them converted (x to the spec's dtype, y int64)."""
    xs, ys = f"x_{split}", f"y_{split}"
    expected = _shape(spec.input_shape)
    for name, a in ((xs, x), (ys, y)):
        if a.ndim == 0:
            raise _fail("shape", file, f"{name} is a single value; expected an array with one row per example")
    if split == "train" and (len(x) == 0 or len(y) == 0):
        raise _fail("empty", file, f"x_train has {len(x)} examples and y_train {len(y)}; expected at least one")
    # dtypes
    if x.dtype.kind not in "fiu":
        raise _fail("dtype", file, f"{xs} holds {x.dtype}, the run's model expects real numbers ({spec.x_dtype})")
    if spec.x_kind in "iu" and x.dtype.kind == "f":
        raise _fail("dtype", file, f"{xs} holds {x.dtype}, the run's model expects integer token ids ({spec.x_dtype})")
    if y.dtype.kind not in "iu":
        raise _fail("dtype", file, f"{ys} holds {y.dtype}, the run's model expects integer labels")
    # shapes
    if tuple(x.shape[1:]) != spec.input_shape:
        raise _fail(
            "shape", file, f"{xs} has examples of shape {_shape(x.shape[1:])}, the run's model expects {expected}"
        )
    y_expected = () if spec.task == "classification" else spec.input_shape
    if tuple(y.shape[1:]) != y_expected:
        raise _fail(
            "shape",
            file,
            f"{ys} has shape {_batch_shape(y.shape)}, "
            f"the run's {spec.task} model expects {_batch_shape(y_expected, 'N')}",
        )
    if len(x) != len(y):
        raise _fail("shape", file, f"{xs} has {len(x)} examples but {ys} has {len(y)}; expected one label per example")
    # values
    if y.size and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        outside = int(np.count_nonzero((y < 0) | (y >= spec.num_classes)))
        raise _fail(
            "label-range",
            file,
            f"{ys} holds labels outside [0, {spec.num_classes}), the range the run's model predicts",
            f"{outside} labels outside; found range [{int(y.min())}, {int(y.max())}]",
        )
    if spec.x_kind in "iu" and x.size and (int(x.min()) < 0 or int(x.max()) >= spec.num_classes):
        raise _fail(
            "input-range",
            file,
            f"{xs} holds token ids outside [0, {spec.num_classes}), the run's vocabulary",
            f"found range [{int(x.min())}, {int(x.max())}]",
        )
    if spec.x_kind == "f":
        with np.errstate(over="ignore"):  # a value too large for the model's dtype becomes inf, reported below
            converted = x.astype(spec.x_dtype, copy=False)
        if x.dtype == np.uint8:  # images as bytes: [0, 1] like every fedmodel image dataset
            converted = converted / np.asarray(255, spec.x_dtype)
        bad = int(np.count_nonzero(~np.isfinite(converted)))
        if bad:
            raise _fail(
                "non-finite",
                file,
                f"{xs} holds NaN or infinite values (as {spec.x_dtype}); the run's model needs finite inputs",
                f"{bad} non-finite values",
            )
    else:
        converted = x.astype(spec.x_dtype, copy=False)
    return converted, y.astype(np.int64, copy=False)


def _load_checked(path: str | os.PathLike[str], spec: DataSpec) -> tuple[Shard | None, dict[str, np.ndarray], Path]:
    """The file's arrays, checked and converted; the Shard when the file has its own test split."""
    file = Path(path).expanduser()
    arrays = _read_arrays(file)
    x_train, y_train = _check_split(file, spec, "train", arrays["x_train"], arrays["y_train"])
    checked = {"x_train": x_train, "y_train": y_train}
    if "x_test" in arrays:
        x_test, y_test = _check_split(file, spec, "test", arrays["x_test"], arrays["y_test"])
        checked |= {"x_test": x_test, "y_test": y_test}
        return Shard(x_train, y_train, x_test, y_test), checked, file
    return None, checked, file


def load_node_data(path: str | os.PathLike[str], spec: DataSpec, *, eval_fraction: float = 0.1, seed: int = 0) -> Shard:
    """This node's shard from its own ``.npz``, checked against the run's :class:`DataSpec`.

    ``x_test, y_test`` become the shard's local evaluation part; without them, a seeded ``eval_fraction``
    of the training examples is held out (as :func:`~fedmodel.federated.shards.file_shard` does).

    Raises
    ------
    NodeDataError
        With one of :data:`CODES` when the file is absent, unreadable or does not fit the spec.
    """
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    shard, arrays, _ = _load_checked(path, spec)
    if shard is not None:
        return shard
    x, y = arrays["x_train"], arrays["y_train"]
    order = np.random.default_rng(seed).permutation(len(x))
    n_eval = int(len(x) * eval_fraction)
    return Shard(x[order[n_eval:]], y[order[n_eval:]], x[order[:n_eval]], y[order[:n_eval]])


def check_node_data(path: str | os.PathLike[str], spec: DataSpec) -> dict[str, Any]:
    """Check a node's file before it joins; a JSON-ready summary for its operator (stays on the node).

    Raises
    ------
    NodeDataError
        As :func:`load_node_data`.
    """
    shard, arrays, file = _load_checked(path, spec)
    y_train = arrays["y_train"]
    labels, counts = np.unique(y_train, return_counts=True)
    summary: dict[str, Any] = {
        "file": str(file),
        "sha256": _sha256(file),
        "ok": True,
        "spec": spec.to_config(),
        "train_examples": len(y_train),
        "test_examples": len(shard.y_eval) if shard is not None else 0,
        "test_split": "x_test/y_test in the file" if shard is not None else "held out from x_train at load time",
        "x_shape": list(arrays["x_train"].shape),
        "y_shape": list(y_train.shape),
    }
    if spec.task == "classification":
        summary["classes_present"] = [int(c) for c in labels]
        summary["train_label_counts"] = {str(int(c)): int(n) for c, n in zip(labels, counts, strict=True)}
        summary["classes_missing"] = sorted(set(range(spec.num_classes)) - {int(c) for c in labels})
    else:
        summary["distinct_target_tokens"] = len(labels)
    return summary


# -- export and manifest --------------------------------------------------------------------------------------


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _settings(config: FederatedConfig, eval_fraction: float) -> dict[str, Any]:
    return {
        "dataset": config.dataset,
        "data_path": config.data_path,
        "seed": config.seed,
        "max_examples": config.max_examples,
        "seq_len": config.seq_len,
        "num_clients": config.num_clients,
        "partition": config.partition,
        "alpha": config.alpha,
        "shards_per_client": config.shards_per_client,
        "eval_fraction": eval_fraction,
    }


def export_shards(config: FederatedConfig, out_dir: str | os.PathLike[str], *, eval_fraction: float = 0.1) -> Path:
    """Write ``client-000.npz`` ... (one per client) and ``manifest.json`` into the new directory ``out_dir``.

    Each file holds ``x_train, y_train, x_test, y_test``: client ``i``'s
    :func:`~fedmodel.federated.shards.client_shard` (its local evaluation part as the test split). All or
    nothing: the files are written into a temporary sibling directory that is renamed to ``out_dir`` at the
    end; an error or Ctrl-C removes it (and any parent directories this call created).

    Returns
    -------
    Path
        The manifest's path.

    Raises
    ------
    ConfigError
        ``out_dir`` exists and is not an empty directory, ``eval_fraction`` is outside ``[0, 1)``, or a
        client would get no training examples.
    """
    out = Path(out_dir).expanduser()
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ConfigError(f"export directory {out} exists and is not a directory; expected a new directory")
        if any(out.iterdir()):
            raise ConfigError(f"export directory {out} is not empty; expected a new or empty directory")
    created: list[Path] = []
    parent = out.parent.absolute()
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        spec = DataSpec.of(dataset_for(config))
        files = []
        for i in range(config.num_clients):
            shard = client_shard(config, i, eval_fraction=eval_fraction)
            if len(shard.x_train) == 0:
                raise ConfigError(
                    f"client {i} would get no training examples ({config.partition} partition of {config.dataset} "
                    f"among {config.num_clients} clients); use fewer clients or another partition"
                )
            name = client_file_name(i)
            with (tmp / name).open("wb") as fh:
                np.savez(fh, x_train=shard.x_train, y_train=shard.y_train, x_test=shard.x_eval, y_test=shard.y_eval)
                fh.flush()
                os.fsync(fh.fileno())
            files.append(
                {
                    "name": name,
                    "partition_id": i,
                    "sha256": _sha256(tmp / name),
                    "bytes": (tmp / name).stat().st_size,
                    "num_train": len(shard.x_train),
                    "num_test": len(shard.x_eval),
                }
            )
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "settings": _settings(config, eval_fraction),
            "spec": spec.to_config(),
            "files": files,
        }
        with (tmp / MANIFEST).open("w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        try:
            os.replace(tmp, out)  # replaces an empty directory; fails on a non-empty one
        except OSError as exc:
            raise ConfigError(
                f"could not move the export into {out} ({exc.strerror}); expected a new directory"
            ) from exc
        tmp = None
        _fsync_dir(out.parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # innermost first
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return out / MANIFEST


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``directory/manifest.json`` as written by :func:`export_shards`; ConfigError if it is not one."""
    file = Path(directory).expanduser() / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"could not read {file} ({type(exc).__name__}: {exc}); expected export_shards output"
        ) from exc
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise ConfigError(f"{file} is not a {FORMAT} manifest (format {found!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"{file} has format version {manifest.get('version')!r}; this fedmodel reads {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("files"), list):
        raise ConfigError(f"{file} has no list of files")
    return manifest


def verify_manifest(directory: str | os.PathLike[str]) -> list[str]:
    """Recompute every listed file's sha256; one line per problem (an empty list when all match).

    Raises
    ------
    ConfigError
        The directory has no readable manifest.
    """
    root = Path(directory).expanduser()
    problems = []
    for entry in read_manifest(root)["files"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            problems.append(f"manifest entry {entry!r} does not name a file in the directory")
            continue
        file = root / name
        if not file.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = _sha256(file)
        if actual != entry.get("sha256"):
            problems.append(f"{name}: sha256 is {actual}, the manifest says {entry.get('sha256')}")
    return problems
