"""The small CNN of tensorflow-privacy's MNIST DP-SGD tutorial (``tutorials/mnist_dpsgd_tutorial_keras.py``).

Layers, with shapes for a 28x28x1 input (26,010 parameters at 10 classes, as in the tutorial)::

    Conv2D(16, 8, strides=2, padding="same", relu)   # (14, 14, 16)
    MaxPool2D(2, 1)                                  # (13, 13, 16)
    Conv2D(32, 4, strides=2, padding="valid", relu)  # (5, 5, 32)
    MaxPool2D(2, 1)                                  # (4, 4, 32)
    Flatten -> Dense(32, relu) -> Dense(num_classes) # logits

Small inputs: the ``valid`` second convolution needs height and width >= 13. For sides 7 to 12 (e.g. the
8x8 sklearn digits) the second convolution uses ``padding="same"`` instead; everything else is unchanged.
Sides below 7 leave nothing for the last pooling and are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.errors import ConfigError
from fedmodel.zoo.arith import Padding, conv2d_params, conv_out, dense_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf

MIN_SIDE = 7
VALID_CONV2_MIN_SIDE = 13


@dataclass(frozen=True)
class CNNHparams:
    """The tutorial CNN has no hyperparameters."""


def check_shape(input_shape: Shape) -> None:
    """Reject images smaller than 7x7."""
    if min(input_shape[:2]) < MIN_SIDE:
        raise ConfigError(f"cnn: height and width must be >= {MIN_SIDE}, got input_shape {input_shape!r}")


def conv2_padding(input_shape: Shape) -> Padding:
    """``"valid"`` as in the tutorial when both sides are >= 13, else ``"same"``."""
    return "valid" if min(input_shape[:2]) >= VALID_CONV2_MIN_SIDE else "same"


def _flat_features(input_shape: Shape) -> int:
    """Length of the Flatten output."""
    padding = conv2_padding(input_shape)
    sides = []
    for side in input_shape[:2]:
        side = conv_out(side, kernel=8, stride=2, padding="same")
        side = conv_out(side, kernel=2, stride=1, padding="valid")
        side = conv_out(side, kernel=4, stride=2, padding=padding)
        sides.append(conv_out(side, kernel=2, stride=1, padding="valid"))
    return sides[0] * sides[1] * 32


def count_params(input_shape: Shape, num_classes: int, hp: CNNHparams) -> int:
    """Two convolutions and two Dense layers."""
    return (
        conv2d_params(8, input_shape[2], 16)
        + conv2d_params(4, 16, 32)
        + dense_params(_flat_features(input_shape), 32)
        + dense_params(32, num_classes)
    )


def build(input_shape: Shape, num_classes: int, hp: CNNHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, num_classes)``."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape)
    x = layers.Conv2D(16, 8, strides=2, padding="same")(inputs)
    x = layers.ReLU()(x)
    x = layers.MaxPool2D(2, 1)(x)
    x = layers.Conv2D(32, 4, strides=2, padding=conv2_padding(input_shape))(x)
    x = layers.ReLU()(x)
    x = layers.MaxPool2D(2, 1)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32)(x)
    x = layers.ReLU()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="cnn")


SPEC = ModelSpec(
    name="cnn",
    task="classification",
    input_kind="image",
    description="Small CNN of the tensorflow-privacy MNIST DP-SGD tutorial (2 conv + 2 dense)",
    default_input_shape=(28, 28, 1),
    default_num_classes=10,
    hparams_type=CNNHparams,
    builder=build,
    param_counter=count_params,
    shape_check=check_shape,
)
