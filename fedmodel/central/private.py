"""DP-SGD inside the central trainer: the wrapped model, the batches, and the ledger callback.

The ledger callback records one Poisson-subsampled Gaussian event per step actually taken and stops
training once the planned steps, or the steps the budget allows, are spent: the step that would exceed
``target_epsilon`` never runs (fail closed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from fedmodel.central.config import TrainConfig
from fedmodel.errors import ConfigError
from fedmodel.privacy.dp_plan import PrivatePlan
from fedmodel.privacy.dpsgd import DPSGDConfig, DPSGDModel
from fedmodel.privacy.ledger import PrivacyLedger
from fedmodel.privacy.sampling import poisson_batches, shuffled_batches


def new_ledger(plan: PrivatePlan, *, steps_per_epoch: int) -> PrivacyLedger:
    """An empty example-level ledger for this run."""
    return PrivacyLedger(
        unit="example",
        population=plan.examples,
        sampling="poisson" if plan.privacy.sampling == "poisson" else "shuffle",
        steps_per_epoch=steps_per_epoch,
        delta=plan.privacy.delta,
        notes=[
            f"l2_norm_clip {plan.privacy.l2_norm_clip}",
            f"noise_multiplier {plan.noise_multiplier:.6g}" + (" (calibrated)" if plan.calibrated else ""),
        ],
    )


class LedgerCallback(tf.keras.callbacks.Callback):
    """Records each DP-SGD step in the ledger; stops training when the allowed steps are spent."""

    def __init__(self, ledger: PrivacyLedger, plan: PrivatePlan) -> None:
        super().__init__()
        self.ledger = ledger
        self.plan = plan
        self.epoch = 0
        self.stopped_by_budget = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.ledger.record(
            noise_multiplier=self.plan.noise_multiplier,
            sampling_rate=self.plan.sampling_rate,
            epoch=self.epoch,
        )
        if self.ledger.steps >= self.plan.max_steps:
            self.model.stop_training = True
            self.stopped_by_budget = self.plan.budget_limited

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and self.plan.noise_multiplier > 0:
            logs["epsilon"] = self.ledger.epsilon(self.plan.privacy.delta, self.plan.privacy.accountant)


def dp_dataset(x: np.ndarray, y: np.ndarray, plan: PrivatePlan, *, seed: int) -> tf.data.Dataset:
    """Endless ``(x, y, mask)`` batches as the plan's sampling asks."""
    if plan.privacy.sampling == "poisson":
        return poisson_batches(x, y, sampling_rate=plan.sampling_rate, seed=seed)
    return shuffled_batches(x, y, batch_size=plan.batch_size, seed=seed, drop_remainder=plan.privacy.engine == "tfp")


def steps_per_epoch(plan: PrivatePlan) -> int:
    """Steps per epoch: ``ceil(N / B)``, or ``floor(N / B)`` for tfp's fixed-size batches."""
    if plan.privacy.engine == "tfp":
        return plan.examples // plan.batch_size
    return -(-plan.examples // plan.batch_size)


def compile_private(
    model: tf.keras.Model, config: TrainConfig, plan: PrivatePlan, *, optimizer: tf.keras.optimizers.Optimizer
) -> tf.keras.Model:
    """``model`` ready to ``fit`` with DP-SGD: fedmodel's engine, or tensorflow-privacy's reference."""
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if plan.privacy.engine == "tfp":
        model.compile(
            optimizer=tfp_optimizer(config, plan),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE
            ),
            metrics=metrics,
        )
        return model
    expected = plan.sampling_rate * plan.examples  # = batch_size
    dp = DPSGDConfig(
        l2_norm_clip=plan.privacy.l2_norm_clip,
        noise_multiplier=plan.noise_multiplier,
        expected_batch_size=expected,
        engine=plan.privacy.engine,
    )
    wrapped = DPSGDModel(model, dp)
    wrapped.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return wrapped


def tfp_optimizer(config: TrainConfig, plan: PrivatePlan) -> tf.keras.optimizers.Optimizer:
    """tensorflow-privacy's DPKeras optimizer for the config: one microbatch per example."""
    import tensorflow_privacy as tfp

    common = {
        "l2_norm_clip": plan.privacy.l2_norm_clip,
        "noise_multiplier": plan.noise_multiplier,
        "num_microbatches": plan.batch_size,
        "learning_rate": config.learning_rate,
    }
    if config.optimizer == "sgd":
        return tfp.DPKerasSGDOptimizer(**common)
    if config.optimizer == "momentum":
        return tfp.DPKerasSGDOptimizer(momentum=config.momentum, **common)
    if config.optimizer == "adam":
        return tfp.DPKerasAdamOptimizer(**common)
    raise ConfigError(f"engine 'tfp' supports optimizers sgd, momentum and adam; got {config.optimizer!r}")
