"""Writing and restoring the resume points of a central run (their layout: :mod:`.resume`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from fedmodel.central.config import TrainConfig
from fedmodel.central.resume import CONFIG, LATEST, RESUME, STATE, WEIGHTS, ResumePoint
from fedmodel.errors import ConfigError
from fedmodel.privacy.ledger import LEDGER_FILE, PrivacyLedger, atomic_write


def _checkpoint(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def build_optimizer(optimizer: Any, variables: list[tf.Variable]) -> None:
    """Create the optimizer's slot variables now, so that a restore fills them instead of deferring."""
    if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
        optimizer._create_all_weights(variables)
    else:
        optimizer.build(variables)


def restore(point: ResumePoint, model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer) -> None:
    """Load the weights and the optimizer state of ``point`` (call in the strategy's scope)."""
    build_optimizer(optimizer, model.trainable_variables)
    try:
        _checkpoint(model, optimizer).read(str(point.directory / WEIGHTS)).assert_consumed()
    except (AssertionError, ValueError) as err:
        raise ConfigError(f"the resume point in {point.directory} does not match this model: {err}") from err


class EpochCheckpointer(tf.keras.callbacks.Callback):
    """Writes a resume point after every epoch and keeps the whole history (earlier sessions included).

    ``model`` and ``optimizer`` are what to save (the zoo model, not a DP-SGD wrapper); ``ledger`` is the
    run's privacy ledger or ``None``. Place it after the callbacks that add to the epoch's logs.
    """

    def __init__(
        self,
        staging: Path,
        config: TrainConfig,
        *,
        net: tf.keras.Model,
        optimizer: tf.keras.optimizers.Optimizer,
        ledger: PrivacyLedger | None,
        history: dict[str, list[float]] | None = None,
        keys: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.root = staging / RESUME
        self.config = config
        self.net = net
        self.optimizer = optimizer
        self.ledger = ledger
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            if self.keys is None or key in self.keys:  # dp_outputs_only: not even the resume point keeps the rest
                self.history.setdefault(key, []).append(float(value))
        self.save(epochs_done=epoch + 1)

    def save(self, *, epochs_done: int) -> Path:
        """Write the resume point of ``epochs_done`` epochs, then publish it (older points are removed)."""
        name = f"epoch-{epochs_done:05d}"
        final = self.root / name
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / CONFIG).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        (tmp / STATE).write_text(json.dumps({"epochs_done": epochs_done, "history": self.history}) + "\n")
        _checkpoint(self.net, self.optimizer).write(str(tmp / WEIGHTS))
        if self.ledger is not None:
            self.ledger.save(tmp / LEDGER_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write(self.root / LATEST, json.dumps({"epochs_done": epochs_done, "dir": name}) + "\n")
        for old in self.root.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final


class ResumedEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping that carries on an interrupted run's count instead of starting afresh.

    ``previous`` are the monitored values of the epochs already done (from the resume point): the best of
    them and the epochs since it are restored when training begins, and with ``restore_best_weights`` the
    best weights are read from ``best_weights`` (the run's ModelCheckpoint file, written after the resume
    point of the same epoch, so it never holds weights the ledger has not counted).
    """

    def __init__(self, *, previous: list[float], best_weights: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.previous = list(previous)
        self.best_weights_file = best_weights

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if not self.previous:
            return
        best_epoch, best = 0, self.previous[0]
        for epoch, value in enumerate(self.previous[1:], start=1):
            if self._is_improvement(value, best):
                best, best_epoch = value, epoch
        self.best, self.best_epoch = best, best_epoch
        self.wait = len(self.previous) - 1 - best_epoch
        if self.restore_best_weights and self.best_weights_file is not None and self.best_weights_file.is_file():
            current = self.model.get_weights()
            self.model.load_weights(str(self.best_weights_file))
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)
