"""Run directories that appear whole or not at all, and the ``run.json`` record.

A run writes into a hidden staging directory beside its final path; only a run that finishes is renamed
into place. A run that fails (bad input found late, an exception, Ctrl-C) leaves nothing behind, unless
its caller asks to keep a staging directory that can be resumed (central training after a finished
epoch: :mod:`fedmodel.central.resume`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from fedmodel.atomic import atomic_write
from fedmodel.errors import ConfigError

_PACKAGES = (
    "fedmodel",
    "tensorflow",
    "tensorflow-privacy",
    "tensorflow-federated",
    "flwr",
    "dp-accounting",
    "numpy",
)


def versions() -> dict[str, str]:
    """Python and the versions of the packages a result depends on (no imports needed)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def default_run_dir(kind: str, *parts: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<kind>-<parts>-<timestamp>``, made unique if it exists."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / "-".join([kind, *parts, stamp])
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_new_run_dir(path: str | os.PathLike[str]) -> Path:
    """Reject a run directory that exists already (nothing is overwritten)."""
    final = Path(path)
    if final.exists():
        raise ConfigError(f"run directory {final} already exists; pass a new --run-dir")
    return final


@contextlib.contextmanager
def staged_run_dir(
    path: str | os.PathLike[str],
    *,
    staging: Path | None = None,
    keep_if: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Yield a staging directory that becomes ``path`` when the block succeeds, and vanishes when it fails.

    ``staging`` names the staging directory (created if missing, reused if present; a fresh hidden one
    beside ``path`` by default). When the block fails and ``keep_if(staging)`` is true, the staging
    directory stays (an interrupted run that can be resumed); otherwise it is removed.
    """
    final = check_new_run_dir(path)
    created: list[Path] = []
    for parent in reversed(final.parents):
        if not parent.exists():
            created.append(parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    else:
        staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
        staging.rename(final)
    except BaseException:
        if keep_if is not None and keep_if(staging):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (temp file + rename)."""
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
