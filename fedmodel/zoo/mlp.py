"""Fully connected network: ``Flatten -> [Dense(width, relu) -> Dropout]* -> Dense(num_classes)``.

The default ``hidden=(200, 200)`` is the "2NN" of McMahan et al. 2017 (Communication-Efficient Learning
of Deep Networks from Decentralized Data), 199,210 parameters on MNIST.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.zoo import checks
from fedmodel.zoo.arith import dense_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class MLPHparams:
    """Hyperparameters of :mod:`fedmodel.zoo.mlp`.

    Attributes
    ----------
    hidden
        Widths of the hidden ReLU layers (a list is accepted and stored as a tuple).
    dropout
        Dropout rate after each hidden layer, in ``[0, 1)``; 0 adds no Dropout layers.
    """

    hidden: tuple[int, ...] = (200, 200)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", checks.positive_ints("hidden", self.hidden))
        object.__setattr__(self, "dropout", checks.dropout_rate("dropout", self.dropout))


def count_params(input_shape: Shape, num_classes: int, hp: MLPHparams) -> int:
    """Sum of the Dense layers' weights and biases."""
    widths = (math.prod(input_shape), *hp.hidden, num_classes)
    return sum(dense_params(n_in, n_out) for n_in, n_out in itertools.pairwise(widths))


def build(input_shape: Shape, num_classes: int, hp: MLPHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, num_classes)``."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=input_shape)
    x = tf.keras.layers.Flatten()(inputs)
    for width in hp.hidden:
        x = tf.keras.layers.Dense(width)(x)
        x = tf.keras.layers.ReLU()(x)
        if hp.dropout > 0:
            x = tf.keras.layers.Dropout(hp.dropout)(x)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="mlp")


SPEC = ModelSpec(
    name="mlp",
    task="classification",
    input_kind="vector",
    description="Fully connected ReLU network, default the 2NN of McMahan et al. 2017 (200-200)",
    default_input_shape=(784,),
    default_num_classes=10,
    hparams_type=MLPHparams,
    builder=build,
    param_counter=count_params,
)
