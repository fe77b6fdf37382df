"""Local training on one client: a model built and compiled once per process, reused every round.

The textbook Flower client builds a new Keras model on every call (seconds of graph building per
round). Here a :class:`LocalTrainer` is cached per worker process and per model configuration: each
call only sets the incoming weights, resets the optimizer state, trains on the shard and returns the
weights. FedProx's proximal term and local DP-SGD are part of the cached compiled step.

Randomness: ``seed`` decides the initial weights and the order of non-private local epochs. Local DP-SGD
draws its noise from the trainer's own generator keyed with OS entropy (one per trainer, so one per
process or more) and its Poisson batches from a fresh OS-entropy generator per call, never from the seed:
two clients with the same configuration and seed add independent noise, which does not cancel in the
difference of their updates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import tensorflow as tf

from fedmodel import zoo
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.shards import Shard
from fedmodel.metrics import classification_metrics
from fedmodel.privacy.accounting import PoissonSampling
from fedmodel.privacy.engine.batches import poisson_batches
from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel
from fedmodel.privacy.ledger import PrivacyLedger
from fedmodel.privacy.mechanism import GaussianMechanism


@dataclasses.dataclass(frozen=True)
class TrainerKey:
    """What a cached trainer depends on (everything else may change between rounds)."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    hparams: tuple[tuple[str, Any], ...]
    optimizer: str
    lr: float
    proximal: bool
    local_dp_noise: float | None
    local_dp_clip: float
    batch_size: int
    seed: int

    @classmethod
    def of(
        cls, config: FederatedConfig, *, input_shape: tuple[int, ...], num_classes: int, proximal_mu: float
    ) -> TrainerKey:
        hp = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.hparams.items()))
        return cls(
            config.model, tuple(input_shape), num_classes, hp, config.client_optimizer, config.client_lr,
            proximal_mu > 0, config.local_dp_noise, config.local_dp_clip, config.local_batch_size, config.seed,
        )  # fmt: skip


class LocalTrainer:
    """A compiled zoo model for local rounds: ``fit`` and ``evaluate`` with weights in, weights out."""

    def __init__(self, key: TrainerKey) -> None:
        self.key = key
        self.model = zoo.build_model(
            key.model,
            input_shape=key.input_shape,
            num_classes=key.num_classes,
            seed=key.seed,
            **dict(key.hparams),
        )
        self.mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.anchor = [tf.Variable(w, trainable=False) for w in self.model.trainable_weights]
        if key.proximal:  # FedProx (Li et al. 2020): mu/2 * |w - w_global|^2, mu set per round
            self.model.add_loss(
                lambda: (
                    0.5
                    * self.mu
                    * tf.add_n(
                        [
                            tf.reduce_sum(tf.square(w - a))
                            for w, a in zip(self.model.trainable_weights, self.anchor, strict=True)
                        ]
                    )
                )
            )
        self.optimizer = _optimizer(key.optimizer, key.lr)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        self.trainable: tf.keras.Model = self.model
        if key.local_dp_noise is not None:  # its own secure noise generator (DPSGDModel's default)
            mechanism = GaussianMechanism(noise_multiplier=key.local_dp_noise, clip=key.local_dp_clip)
            self.trainable = DPSGDModel(
                self.model, mechanism=mechanism, dp=DPSGDConfig(expected_batch_size=key.batch_size)
            )
        self.trainable.compile(optimizer=self.optimizer, loss=loss, metrics=metrics)
        self.optimizer.build(self.model.trainable_variables)
        self._loss = loss
        self._epochs_fn = self._compile_epochs(key)
        x_spec = tf.TensorSpec((None, *key.input_shape), self.model.inputs[0].dtype)
        self._logits_fn = tf.function(lambda x: self.model(x, training=False), input_signature=[x_spec])

    def _compile_epochs(self, key: TrainerKey) -> Any:
        """One compiled function that runs all local epochs of minibatch training over a shard.

        Shuffling, batching and the optimizer steps all happen inside the graph, so a client call costs
        one function call, not a Keras ``fit`` (data adapter, callbacks, per-step dispatch). Traced once:
        the example dimension is unknown, so shards of every size share the trace.
        """
        model, optimizer, loss_fn, batch = self.model, self.optimizer, self._loss, key.batch_size
        x_spec = tf.TensorSpec((None, *key.input_shape), self.model.inputs[0].dtype)
        y_spec = tf.TensorSpec((None, *self.model.output_shape[1:-1]), tf.int64)

        @tf.function(input_signature=[x_spec, y_spec, tf.TensorSpec((), tf.int32), tf.TensorSpec((2,), tf.int32)])
        def run(x: tf.Tensor, y: tf.Tensor, epochs: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            n = tf.shape(x)[0]
            total_loss, correct, count = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
            for epoch in tf.range(epochs):
                order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed + tf.stack([0, epoch]))
                total_loss, correct, count = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
                for start in tf.range(0, n, batch):
                    idx = order[start : start + batch]
                    xb, yb = tf.gather(x, idx), tf.gather(y, idx)
                    with tf.GradientTape() as tape:
                        logits = model(xb, training=True)
                        loss = loss_fn(yb, logits)
                        if model.losses:
                            loss += tf.add_n(model.losses)
                    grads = tape.gradient(loss, model.trainable_variables)
                    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                    size = tf.cast(tf.size(yb), tf.float32)
                    total_loss += loss * size
                    hits = tf.cast(tf.equal(tf.argmax(logits, -1), yb), tf.float32)
                    correct += tf.reduce_sum(hits)
                    count += size
            return total_loss / tf.maximum(count, 1.0), correct / tf.maximum(count, 1.0)

        return run

    def _load(self, weights: list[np.ndarray]) -> None:
        self.model.set_weights(weights)
        for variable in self.optimizer.variables:  # a fresh client optimizer every round (FedAvg)
            variable.assign(tf.zeros_like(variable))
        for anchor, w in zip(self.anchor, self.model.trainable_weights, strict=True):
            anchor.assign(w)

    def fit(
        self,
        weights: list[np.ndarray],
        shard: Shard,
        *,
        epochs: int,
        proximal_mu: float = 0.0,
        seed: int = 0,
        ledger: PrivacyLedger | None = None,
    ) -> tuple[list[np.ndarray], dict[str, float]]:
        """Train ``epochs`` passes over the shard from ``weights``; returns new weights and train metrics.

        With local DP-SGD, batches are Poisson-sampled with ``q = batch_size / len(shard)`` from OS entropy
        (``seed`` is not used) and every step is recorded in ``ledger`` (the client's own, kept across
        rounds) with the noise multiplier of the trainer's mechanism. Without it, ``seed`` orders the epochs.
        """
        self._load(weights)
        self.mu.assign(proximal_mu)
        n, batch = len(shard.x_train), self.key.batch_size
        if isinstance(self.trainable, DPSGDModel):
            q = min(1.0, batch / n)
            steps = math.ceil(epochs * n / batch)
            data = poisson_batches(shard.x_train, shard.y_train, sampling_rate=q)
            history = self.trainable.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            if ledger is not None:
                ledger.record_release(self.trainable.mechanism.event(), PoissonSampling(q), count=steps)
            metrics = {f"train_{k}": float(v[-1]) for k, v in history.history.items() if k in ("loss", "accuracy")}
        else:
            loss, accuracy = self._epochs_fn(
                shard.x_train, shard.y_train.astype(np.int64), tf.constant(epochs, tf.int32),
                tf.constant([seed % 2**31, 0], tf.int32),
            )  # fmt: skip
            metrics = {"train_loss": float(loss), "train_accuracy": float(accuracy)}
        return [w.copy() for w in self.model.get_weights()], metrics

    def evaluate(
        self, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, *, task: str, detailed: bool = True
    ) -> dict[str, Any]:
        """Loss, accuracy (and, if ``detailed``, macro-F1/AUC for classification) of ``weights`` on ``(x, y)``."""
        return classification_metrics(self.logits(weights, x), y, task=task, detailed=detailed)

    def logits(self, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        """The model's logits on ``x`` with ``weights`` (float32)."""
        self.model.set_weights(weights)
        # One compiled call per chunk instead of Keras `predict` (which costs tens of ms per call).
        chunks = [self._logits_fn(x[i : i + 2048]).numpy() for i in range(0, len(x), 2048)]
        return np.concatenate(chunks).astype(np.float32)


def _optimizer(name: str, lr: float) -> tf.keras.optimizers.Optimizer:
    if name == "sgd":
        return tf.keras.optimizers.SGD(lr)
    if name == "momentum":
        return tf.keras.optimizers.SGD(lr, momentum=0.9)
    return tf.keras.optimizers.Adam(lr)


@functools.lru_cache(maxsize=8)
def trainer_for(key: TrainerKey) -> LocalTrainer:
    """The process-wide trainer for ``key`` (built and traced once)."""
    return LocalTrainer(key)
