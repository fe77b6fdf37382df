"""Keras progress callbacks that write to stderr, so stdout stays clean for ``--format json``.

On a terminal: a tqdm bar per epoch (:class:`ProgressBar`). Otherwise (logs, CI): one line per epoch
(:class:`EpochLines`), which also spares Keras the per-batch callback overhead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import tensorflow as tf
from tqdm import tqdm


def format_logs(logs: dict[str, Any] | None, keys: tuple[str, ...] | None = None) -> str:
    """``loss 0.1234  accuracy 0.9800`` from a Keras logs dict (only ``keys`` when given)."""
    return "  ".join(
        f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "lr" and (keys is None or k in keys)
    )


class EpochLines(tf.keras.callbacks.Callback):
    """One line per epoch: metrics and seconds."""

    def __init__(self, *, epochs: int, stream: TextIO | None = None, keys: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.keys = keys
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._start
        print(
            f"epoch {epoch + 1}/{self.epochs}  {format_logs(logs, self.keys)}  ({seconds:.1f}s)",
            file=self.stream,
            flush=True,
        )


class ProgressBar(tf.keras.callbacks.Callback):
    """A tqdm bar over the steps of each epoch, with the running metrics."""

    def __init__(
        self, *, epochs: int, steps_per_epoch: int, stream: TextIO | None = None, keys: tuple[str, ...] | None = None
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream or sys.stderr
        self.keys = keys
        self._bar: tqdm | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if logs and batch % 10 == 0 and self.keys is None:
                self._bar.set_postfix({k: f"{float(v):.4f}" for k, v in logs.items()})

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs, self.keys))
            self._bar.close()
            self._bar = None


def progress_callback(
    *, epochs: int, steps_per_epoch: int, stream: TextIO | None = None, keys: tuple[str, ...] | None = None
) -> tf.keras.callbacks.Callback:
    """A bar on a terminal, epoch lines elsewhere; ``keys`` limits the metrics shown (None: all)."""
    out = stream or sys.stderr
    if out.isatty():
        return ProgressBar(epochs=epochs, steps_per_epoch=steps_per_epoch, stream=out, keys=keys)
    return EpochLines(epochs=epochs, stream=out, keys=keys)
