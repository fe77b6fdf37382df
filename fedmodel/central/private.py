"""DP-SGD inside the central trainer: the wrapped model, the batches, and the ledger callback.

The ledger callback records one Poisson-subsampled Gaussian event per step actually taken, with the noise
multiplier of the mechanism that ran (read from the compiled model, not from the plan), and stops training
once the planned steps, or the steps the budget allows, are spent: the step that would exceed
``target_epsilon`` never runs (fail closed).

Randomness: the batches and fedmodel's noise come from OS entropy (:mod:`fedmodel.privacy.randomness`),
never from ``--seed``. The ``tfp`` reference engine (tensorflow-privacy's ``DPKeras*Optimizer``) draws its
noise with ``tf.random.normal`` under TensorFlow's global seed, which ``--seed`` sets; so
:func:`tfp_optimizer` re-seeds TensorFlow's global generator from OS entropy first (after the weights are
initialized). Everything that draws from the global seed afterwards (the tfp noise, dropout masks) is then
unpredictable, and a tfp run is not reproducible. tensorflow-privacy takes one normal draw per value (no
``NOISE_DRAWS`` sum): fedmodel's engines are the ones to use for a release.
"""

from __future__ import annotations

from typing import Any

import dp_accounting
import numpy as np
import tensorflow as tf

from fedmodel.central.config import TrainConfig
from fedmodel.errors import ConfigError
from fedmodel.privacy import randomness
from fedmodel.privacy.accounting import PoissonSampling
from fedmodel.privacy.dp_plan import PrivatePlan
from fedmodel.privacy.engine.batches import poisson_batches, shuffled_batches
from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel
from fedmodel.privacy.ledger import PrivacyLedger
from fedmodel.privacy.mechanism import GaussianMechanism


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


def released_noise_multiplier(model: tf.keras.Model) -> float:
    """The noise multiplier a compiled DP model applies: its mechanism's, or the tfp optimizer's setting.

    tensorflow-privacy's optimizers state their query as ``global_state`` ``{l2_norm_clip, stddev}``
    in ``get_config()``; the multiplier is ``stddev / l2_norm_clip``.
    """
    if isinstance(model, DPSGDModel):
        return model.mechanism.noise_multiplier
    optimizer = getattr(model, "optimizer", None)
    state = optimizer.get_config().get("global_state") if optimizer is not None else None
    if not isinstance(state, dict) or not {"stddev", "l2_norm_clip"} <= state.keys():
        raise ConfigError(f"model {model.name!r} is neither a DPSGDModel nor compiled with a DP optimizer")
    return float(state["stddev"]) / float(state["l2_norm_clip"])


class LedgerCallback(tf.keras.callbacks.Callback):
    """Records each DP-SGD step in the ledger; stops training when the allowed steps are spent.

    The noise multiplier recorded is the one the model applies (:func:`released_noise_multiplier`), read
    when training begins; the sampling rate is the plan's, the rate :func:`dp_dataset` samples with.
    """

    def __init__(self, ledger: PrivacyLedger, plan: PrivatePlan) -> None:
        super().__init__()
        self.ledger = ledger
        self.plan = plan
        self.epoch = 0
        self.stopped_by_budget = False
        self._noise_multiplier: float | None = None

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier of the steps recorded (known once training has begun)."""
        if self._noise_multiplier is None:
            raise RuntimeError("the noise multiplier is read from the model when training begins")
        return self._noise_multiplier

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._noise_multiplier = released_noise_multiplier(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.ledger.record_release(
            dp_accounting.GaussianDpEvent(self.noise_multiplier),
            PoissonSampling(self.plan.sampling_rate),
            epoch=self.epoch,
        )
        if self.ledger.steps >= self.plan.max_steps:
            self.model.stop_training = True
            self.stopped_by_budget = self.plan.budget_limited

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and self.noise_multiplier > 0:
            logs["epsilon"] = self.ledger.epsilon(self.plan.privacy.delta, self.plan.privacy.accountant)


def dp_dataset(
    x: np.ndarray, y: np.ndarray, plan: PrivatePlan, *, rng: np.random.Generator | None = None
) -> tf.data.Dataset:
    """Endless ``(x, y, mask)`` batches as the plan's sampling asks, drawn from OS entropy.

    ``rng`` is for tests only; runs never pass one (``--seed`` must not decide which examples a step uses).
    """
    if plan.privacy.sampling == "poisson":
        return poisson_batches(x, y, sampling_rate=plan.sampling_rate, rng=rng)
    return shuffled_batches(x, y, batch_size=plan.batch_size, drop_remainder=plan.privacy.engine == "tfp", rng=rng)


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
    mechanism = GaussianMechanism(noise_multiplier=plan.noise_multiplier, clip=plan.privacy.l2_norm_clip)
    wrapped = DPSGDModel(
        model, mechanism=mechanism, dp=DPSGDConfig(expected_batch_size=expected, engine=plan.privacy.engine)
    )
    wrapped.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return wrapped


def tfp_optimizer(config: TrainConfig, plan: PrivatePlan) -> tf.keras.optimizers.Optimizer:
    """tensorflow-privacy's DPKeras optimizer for the config: one microbatch per example.

    Re-seeds TensorFlow's global generator from OS entropy first: the optimizer's noise follows it (see
    the module docstring). Call after the model's weights are initialized.
    """
    import tensorflow_privacy as tfp

    if config.optimizer not in ("sgd", "momentum", "adam"):
        raise ConfigError(f"engine 'tfp' supports optimizers sgd, momentum and adam; got {config.optimizer!r}")
    tf.random.set_seed(randomness.entropy(63))

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
    return tfp.DPKerasAdamOptimizer(**common)
