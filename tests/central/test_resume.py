"""Resuming an interrupted central run: weights, optimizer state and the privacy ledger carry over.

An interruption is a KeyboardInterrupt raised by the progress callback at the end of an epoch (after
the resume point of that epoch is written, as with Ctrl-C at that moment); the CLI test sends a real
SIGINT to a real process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.central import resume, trainer
from fedmodel.central.config import TrainConfig
from fedmodel.central.trainer import resume_training, train
from fedmodel.errors import ConfigError
from fedmodel.privacy.config import PrivacyConfig
from fedmodel.privacy.ledger import PrivacyLedger

ROOT = Path(__file__).resolve().parents[2]


class Probe(tf.keras.callbacks.Callback):
    """Stands in for the progress callback: records weights and optimizer state, interrupts on request."""

    def __init__(self, log: list[dict[str, Any]], stop_after: int | None) -> None:
        super().__init__()
        self.log = log
        self.stop_after = stop_after

    def snapshot(self, when: str, epoch: int) -> None:
        net = self.model.model if hasattr(self.model, "dp") else self.model
        variables = self.model.optimizer.variables
        variables = variables() if callable(variables) else variables  # legacy optimizers: a method
        self.log.append(
            {
                "when": when,
                "epoch": epoch,
                "weights": [w.copy() for w in net.get_weights()],
                "optimizer": [np.array(v) for v in variables],
            }
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.snapshot("begin", epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.snapshot("end", epoch)
        if self.stop_after is not None and epoch + 1 == self.stop_after:
            raise KeyboardInterrupt


def probing(monkeypatch: pytest.MonkeyPatch, log: list[dict[str, Any]], stop_after: int | None) -> None:
    factory: Callable[..., Probe] = lambda **_: Probe(log, stop_after)  # noqa: E731
    monkeypatch.setattr(trainer, "progress_callback", factory)


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "model": "mlp",
        "dataset": "digits",
        "epochs": 4,
        "batch_size": 64,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "tensorboard": False,
        "hparams": {"hidden": (16,)},
    }
    return TrainConfig(**{**base, **changes})


def interrupted(monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig, run_dir: Path, stop_after: int) -> list[dict]:
    log: list[dict[str, Any]] = []
    probing(monkeypatch, log, stop_after)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run_dir)
    assert not run_dir.exists() and resume.has_point(resume.partial_dir(run_dir))
    return log


@pytest.mark.parametrize(
    "changes",
    [
        {},  # Adam: moments and step count
        {"optimizer": "momentum", "privacy": PrivacyConfig(noise_multiplier=0.5, engine="tfp", sampling="shuffle")},
    ],
    ids=["adam", "tfp-dp-momentum"],
)
def test_resume_restores_weights_and_optimizer_state_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any]
) -> None:
    run_dir = tmp_path / "run"
    first = interrupted(monkeypatch, config(**changes), run_dir, stop_after=2)
    saved = first[-1]  # end of epoch 2
    assert any(np.any(v != 0) for v in saved["optimizer"])  # Adam moments and the step count are non-trivial

    log: list[dict[str, Any]] = []
    probing(monkeypatch, log, stop_after=None)
    result = resume_training(run_dir)
    begin = log[0]
    assert begin["when"] == "begin" and begin["epoch"] == 2  # continues with the third epoch
    for got, want in zip(begin["weights"], saved["weights"], strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(begin["optimizer"]) == len(saved["optimizer"])
    for got, want in zip(begin["optimizer"], saved["optimizer"], strict=True):
        np.testing.assert_array_equal(got, want)

    record = json.loads((run_dir / "run.json").read_text())
    per_epoch = "epsilon" if changes.get("privacy") else "loss"  # a DP run's run.json history is what epsilon covers
    assert result.epochs_run == 4 == record["epochs_run"] == len(record["history"][per_epoch])
    assert record["sessions"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert not (run_dir / "resume").exists()


def test_a_resumed_dp_run_has_exactly_the_steps_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(epochs=3, privacy=PrivacyConfig(noise_multiplier=1.0, delta=1e-5))
    interrupted(monkeypatch, cfg, tmp_path / "resumed", stop_after=1)
    point = resume.load(tmp_path / "resumed")
    assert point.epochs_done == 1 and point.ledger().steps > 0
    probing(monkeypatch, [], stop_after=None)
    resumed = resume_training(tmp_path / "resumed")
    whole = train(cfg, run_dir=tmp_path / "whole")

    a = PrivacyLedger.load(tmp_path / "resumed")
    b = PrivacyLedger.load(tmp_path / "whole")
    assert a.steps == b.steps == resumed.privacy["steps"] == whole.privacy["steps"]  # type: ignore[index]
    assert [(e.epoch, e.count) for e in a.entries] == [(e.epoch, e.count) for e in b.entries]
    assert resumed.privacy["epsilon"] == pytest.approx(whole.privacy["epsilon"])  # type: ignore[index]
    assert len(resumed.history["epsilon"]) == 3


def test_a_resumed_session_draws_fresh_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny clip norm and large noise, an SGD epoch's update is almost only noise: replayed noise
    (re-seeding the second session like the first) would make two sessions' first epochs nearly equal."""
    privacy = PrivacyConfig(noise_multiplier=50.0, l2_norm_clip=1e-4, delta=1e-5)
    cfg = config(epochs=2, optimizer="sgd", learning_rate=0.5, privacy=privacy, validation_fraction=0.0)
    first = interrupted(monkeypatch, cfg, tmp_path / "run", stop_after=1)
    log: list[dict[str, Any]] = []
    probing(monkeypatch, log, stop_after=None)
    resume_training(tmp_path / "run")

    def update(snapshots: list[dict[str, Any]], epoch: int) -> np.ndarray:
        begin = next(s for s in snapshots if s["when"] == "begin" and s["epoch"] == epoch)
        end = next(s for s in snapshots if s["when"] == "end" and s["epoch"] == epoch)
        return np.concatenate([(e - b).ravel() for b, e in zip(begin["weights"], end["weights"], strict=True)])

    u1, u2 = update(first, 0), update(log, 1)
    correlation = float(np.corrcoef(u1, u2)[0, 1])
    assert abs(correlation) < 0.1, correlation  # independent noise: about 0 (replayed noise: about 1)


def test_session_seeds_are_the_run_seed_first_then_distinct() -> None:
    seeds = [resume.session_seed(7, k) for k in range(1, 200)]
    assert seeds[0] == 7
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**32 for s in seeds)


def test_resume_refuses_finished_missing_and_mismatched_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no interrupted run"):
        resume.load(tmp_path / "never")
    finished = tmp_path / "done"
    train(config(epochs=1, checkpoints=False), run_dir=finished)
    with pytest.raises(ConfigError, match="has finished"):
        resume.load(finished)

    run_dir = tmp_path / "run"
    interrupted(monkeypatch, config(), run_dir, stop_after=1)
    with pytest.raises(ConfigError, match="interrupted run is staged"):  # a fresh run may not overwrite it
        train(config(), run_dir=run_dir)
    point = resume.load(run_dir)
    state = point.directory / resume.CONFIG
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "hparams": {"hidden": [8]}}))  # not the network that was saved
    with pytest.raises(ConfigError, match="does not match this model"):
        resume_training(run_dir)
    assert resume.has_point(resume.partial_dir(run_dir))  # a refused resume loses nothing


def test_cli_resume_after_a_real_sigint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "fedmodel.cli", "train", "--model", "logreg", "--dataset", "digits"]
    argv += ["--epochs", "100000", "--noise-multiplier", "1.0", "--no-tensorboard", "--run-dir", str(run_dir)]
    # A shell's background job starts with SIGINT ignored, and Python keeps an inherited SIG_IGN:
    # give the child the default disposition, as a terminal's foreground process has.
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would block the child
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, stderr=sink, text=True, preexec_fn=reset)
    try:
        latest = resume.partial_dir(run_dir) / resume.RESUME / resume.LATEST
        deadline = time.monotonic() + 300
        while not latest.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a 100,000-epoch run behind
            proc.kill()
            proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert f"continue it with: fedmodel train --resume {run_dir}" in stderr
    point = resume.load(run_dir)
    assert point.config.epochs == 100000 and point.epochs_done >= 1

    refused = subprocess.run(
        [sys.executable, "-m", "fedmodel.cli", "train", "--resume", str(run_dir), "--epochs", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "drop --epochs" in refused.stderr
    assert resume.load(run_dir).epochs_done == point.epochs_done


def test_early_stopping_carries_on_the_count_of_an_interrupted_run(tmp_path: Path) -> None:
    from fedmodel.central.checkpointing import ResumedEarlyStopping

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(loss="mse")
    current = model.get_weights()
    model.set_weights([np.full_like(w, 7.0) for w in current])  # the best epoch's weights, as saved
    model.save_weights(str(tmp_path / "best.weights.h5"))
    model.set_weights(current)

    def stopping(previous: list[float]) -> ResumedEarlyStopping:
        es = ResumedEarlyStopping(
            previous=previous,
            best_weights=tmp_path / "best.weights.h5",
            monitor="val_loss",
            patience=3,
            restore_best_weights=True,
        )
        es.set_model(model)
        es.on_train_begin()
        return es

    fresh = stopping([])  # a new run: Keras' own start
    assert fresh.wait == 0 and fresh.best == np.inf and fresh.best_weights is None

    es = stopping([1.0, 0.5, 0.7, 0.8])  # best at epoch 2, then two epochs without improvement
    assert (es.wait, es.best, es.best_epoch) == (2, 0.5, 1)
    model.stop_training = False
    es.on_epoch_end(4, {"val_loss": 0.9})  # the third epoch without improvement: patience 3 is spent
    assert model.stop_training and es.stopped_epoch == 4
    for weights in model.get_weights():
        np.testing.assert_array_equal(weights, 7.0)
