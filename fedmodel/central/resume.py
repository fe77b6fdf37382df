"""Resuming an interrupted central run: the resume point saved after every epoch, and its restoration.

While a run trains (with checkpoints on, the default), its staging directory ``.NAME.partial`` beside the
final run directory ``NAME`` holds a resume point after every finished epoch::

    .NAME.partial/resume/
        sessions.json            # how many sessions have started (seeds a non-private session's order)
        latest.json              # {"epochs_done": k, "dir": "epoch-0000k"}: written last, atomically
        epoch-0000k/
            config.json          # the run's TrainConfig: resuming needs no other flags
            state.json           # epochs done and the history so far
            weights.*            # tf.train.Checkpoint of the model and its optimizer (slots, iterations)
            privacy_ledger.json  # DP-SGD runs: every step taken so far

A run that fails or is interrupted keeps its staging directory when it holds a resume point (and
removes it otherwise, as before); ``fedmodel train --resume NAME`` restores the weights, the optimizer
and the privacy ledger, and continues at the next epoch. The ledger is part of the same resume point as
the weights, so a resumed run's epsilon counts every step its weights have seen: the steps of an epoch
cut short are lost together with that epoch's weights. When the run finishes, the resume points are
deleted and the directory is renamed to ``NAME`` as usual.

Randomness. A resumed session must not replay an earlier session's noise or batches: the same noise
vector in two steps cancels in the difference of two released models, and repeated batches break the
independent sampling the accountant assumes. DP noise and DP batches come from OS entropy in every
session (:mod:`fedmodel.privacy.randomness`), so no seed is involved. What the seed does decide is not
private: session ``k`` of a non-private run seeds TensorFlow and its data order with :func:`session_seed`
``(seed, k)`` (the first session uses ``seed`` itself, so an uninterrupted run is unchanged and
reproducible); the train/validation split always uses ``seed``, so the data a run trains on never changes.

This module reads and lays out resume points without TensorFlow (so bad input fails fast);
:mod:`.checkpointing` writes and restores them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from fedmodel.central.config import TrainConfig
from fedmodel.errors import ConfigError
from fedmodel.privacy.ledger import LEDGER_FILE, PrivacyLedger, atomic_write

RESUME = "resume"
LATEST = "latest.json"
SESSIONS = "sessions.json"
WEIGHTS = "weights"
CONFIG = "config.json"
STATE = "state.json"


def partial_dir(run_dir: str | Path) -> Path:
    """The staging directory of ``run_dir``: ``.NAME.partial`` beside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.partial"


def session_seed(seed: int, session: int) -> int:
    """The seed of session ``session`` (1 for the first) of a run seeded with ``seed``."""
    if session <= 1:
        return seed
    digest = hashlib.sha256(f"fedmodel-resume:{seed}:{session}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def has_point(staging: Path) -> bool:
    """True when ``staging`` holds a resume point."""
    return (staging / RESUME / LATEST).is_file()


def start_session(staging: Path) -> int:
    """Count one more session of the run staged in ``staging``; returns its number (1 for the first)."""
    path = staging / RESUME / SESSIONS
    previous = json.loads(path.read_text())["sessions"] if path.is_file() else 0
    atomic_write(path, json.dumps({"sessions": previous + 1}) + "\n")
    return int(previous + 1)


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """A saved end of epoch: what :func:`restore` and the trainer need to go on from it."""

    config: TrainConfig
    epochs_done: int
    history: dict[str, list[float]]
    directory: Path

    def ledger(self) -> PrivacyLedger:
        """The privacy ledger saved with the weights (DP-SGD runs)."""
        return PrivacyLedger.load(self.directory / LEDGER_FILE)


def load(run_dir: str | Path) -> ResumePoint:
    """The latest resume point of the interrupted run ``run_dir``; a clear error when there is none."""
    run_dir = Path(run_dir)
    staging = partial_dir(run_dir)
    if run_dir.exists():
        raise ConfigError(f"run {run_dir} has finished; nothing to resume (start a new run with another --run-dir)")
    if not has_point(staging):
        where = f"{staging} has no resume point yet" if staging.exists() else f"{staging} does not exist"
        raise ConfigError(
            f"no interrupted run to resume at {run_dir}: {where} "
            "(a run keeps one after each finished epoch unless --no-checkpoints)"
        )
    try:
        latest = json.loads((staging / RESUME / LATEST).read_text())
        directory = staging / RESUME / latest["dir"]
        config = TrainConfig.from_dict(json.loads((directory / CONFIG).read_text()))
        state = json.loads((directory / STATE).read_text())
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"resume point in {staging / RESUME} is unreadable: {err!r}") from err
    return ResumePoint(
        config=config,
        epochs_done=int(state["epochs_done"]),
        history={k: [float(v) for v in vals] for k, vals in state["history"].items()},
        directory=directory,
    )


def finish(staging: Path) -> None:
    """Remove the resume points of a finished run (its model and ledger are in the run directory)."""
    shutil.rmtree(staging / RESUME, ignore_errors=True)
