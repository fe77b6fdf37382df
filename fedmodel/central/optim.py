"""Optimizers, learning-rate schedules and weight regularization from a :class:`TrainConfig`."""

from __future__ import annotations

import math

import tensorflow as tf

from fedmodel.central.config import TrainConfig


def learning_rate(
    config: TrainConfig, *, steps_per_epoch: int
) -> float | tf.keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate or schedule the config asks for, in optimizer steps."""
    total_steps = max(1, config.epochs * steps_per_epoch)
    decay_steps = max(1, round(config.decay_steps_epochs * steps_per_epoch))
    schedules = tf.keras.optimizers.schedules
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "cosine":
        return schedules.CosineDecay(config.learning_rate, decay_steps=total_steps)
    if config.schedule == "exponential":
        return schedules.ExponentialDecay(config.learning_rate, decay_steps, config.decay_rate)
    # "step": piecewise constant, multiplied by decay_rate every decay_steps.
    boundaries = list(range(decay_steps, total_steps, decay_steps))
    values = [config.learning_rate * config.decay_rate**i for i in range(len(boundaries) + 1)]
    if not boundaries:
        return config.learning_rate
    return schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config: TrainConfig, *, steps_per_epoch: int) -> tf.keras.optimizers.Optimizer:
    """A fresh Keras optimizer for the config."""
    lr = learning_rate(config, steps_per_epoch=steps_per_epoch)
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr)
    if config.optimizer == "momentum":
        return tf.keras.optimizers.SGD(lr, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return tf.keras.optimizers.RMSprop(lr, momentum=config.momentum if config.momentum else 0.0)
    return tf.keras.optimizers.Adam(lr)


def add_weight_regularization(model: tf.keras.Model, *, l1: float, l2: float) -> None:
    """Add ``l1 * |w|_1 + l2 * |w|_2^2`` over every kernel (not biases, not norm scales) to ``model.losses``.

    Added as model losses so Keras includes them in the training loss; evaluation losses
    reported by the trainer are the data loss alone.
    """
    if l1 == 0 and l2 == 0:
        return
    kernels = [w for w in model.trainable_weights if "kernel" in w.name or "embeddings" in w.name]

    def penalty(weight: tf.Variable) -> tf.Tensor:
        w = tf.cast(weight, tf.float32)
        return tf.constant(l1, tf.float32) * tf.reduce_sum(tf.abs(w)) + tf.constant(l2, tf.float32) * tf.reduce_sum(
            tf.square(w)
        )

    for kernel in kernels:
        model.add_loss(lambda kernel=kernel: penalty(kernel))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``num_examples`` at ``batch_size`` (last partial batch included)."""
    return max(1, math.ceil(num_examples / batch_size))
