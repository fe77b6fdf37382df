"""LeNet-5 (LeCun et al. 1998) with ReLU activations and average-pooling subsampling.

Layers, with shapes for a 28x28x1 input (61,706 parameters at 10 classes, the classic count)::

    Conv2D(6, 5, padding="same", relu)   # (28, 28, 6)
    AveragePooling2D(2)                  # (14, 14, 6)
    Conv2D(16, 5, padding="valid", relu) # (10, 10, 16)
    AveragePooling2D(2)                  # (5, 5, 16)
    Flatten -> Dense(120, relu) -> Dense(84, relu) -> Dense(num_classes)  # logits

Small inputs: the ``valid`` second convolution needs height and width >= 12. For sides 4 to 11 (e.g. the
8x8 sklearn digits) it uses ``padding="same"`` instead; sides below 4 are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.errors import ConfigError
from fedmodel.zoo.arith import Padding, conv2d_params, conv_out, dense_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf

MIN_SIDE = 4
VALID_CONV2_MIN_SIDE = 12


@dataclass(frozen=True)
class LeNetHparams:
    """LeNet-5 has no hyperparameters."""


def check_shape(input_shape: Shape) -> None:
    """Reject images smaller than 4x4."""
    if min(input_shape[:2]) < MIN_SIDE:
        raise ConfigError(f"lenet: height and width must be >= {MIN_SIDE}, got input_shape {input_shape!r}")


def conv2_padding(input_shape: Shape) -> Padding:
    """``"valid"`` as in LeNet-5 when both sides are >= 12, else ``"same"``."""
    return "valid" if min(input_shape[:2]) >= VALID_CONV2_MIN_SIDE else "same"


def _flat_features(input_shape: Shape) -> int:
    """Length of the Flatten output."""
    padding = conv2_padding(input_shape)
    sides = []
    for side in input_shape[:2]:
        side = conv_out(side, kernel=2, stride=2, padding="valid")
        side = conv_out(side, kernel=5, stride=1, padding=padding)
        sides.append(conv_out(side, kernel=2, stride=2, padding="valid"))
    return sides[0] * sides[1] * 16


def count_params(input_shape: Shape, num_classes: int, hp: LeNetHparams) -> int:
    """Two convolutions and three Dense layers."""
    return (
        conv2d_params(5, input_shape[2], 6)
        + conv2d_params(5, 6, 16)
        + dense_params(_flat_features(input_shape), 120)
        + dense_params(120, 84)
        + dense_params(84, num_classes)
    )


def build(input_shape: Shape, num_classes: int, hp: LeNetHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, num_classes)``."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape)
    x = layers.Conv2D(6, 5, padding="same")(inputs)
    x = layers.ReLU()(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(16, 5, padding=conv2_padding(input_shape))(x)
    x = layers.ReLU()(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(120)(x)
    x = layers.ReLU()(x)
    x = layers.Dense(84)(x)
    x = layers.ReLU()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="lenet")


SPEC = ModelSpec(
    name="lenet",
    task="classification",
    input_kind="image",
    description="LeNet-5 with ReLU and average pooling (2 conv + 3 dense)",
    default_input_shape=(28, 28, 1),
    default_num_classes=10,
    hparams_type=LeNetHparams,
    builder=build,
    param_counter=count_params,
    shape_check=check_shape,
)
