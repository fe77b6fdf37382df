"""Multinomial logistic regression: ``Flatten -> Dense(num_classes)``.

The usual convex baseline of DP-SGD papers; any input shape is flattened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.zoo.arith import dense_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class LogRegHparams:
    """Logistic regression has no hyperparameters."""


def count_params(input_shape: Shape, num_classes: int, hp: LogRegHparams) -> int:
    """Weights and biases of the single Dense layer."""
    return dense_params(math.prod(input_shape), num_classes)


def build(input_shape: Shape, num_classes: int, hp: LogRegHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, num_classes)``."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=input_shape)
    x = tf.keras.layers.Flatten()(inputs)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="logreg")


SPEC = ModelSpec(
    name="logreg",
    task="classification",
    input_kind="vector",
    description="Logistic regression: Flatten + Dense(num_classes)",
    default_input_shape=(784,),
    default_num_classes=10,
    hparams_type=LogRegHparams,
    builder=build,
    param_counter=count_params,
)
