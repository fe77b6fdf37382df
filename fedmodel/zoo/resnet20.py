"""ResNet-20 for CIFAR-sized images (He et al. 2016, Sec. 4.2), with GroupNorm instead of BatchNorm.

A 3x3 stem conv (16 channels), three stages of three basic blocks with widths 16/32/64 (the first block
of stages 2 and 3 has stride 2), global average pooling and ``Dense(num_classes)`` logits. Shortcuts
are parameter-free "option A" (subsample + zero channels, :class:`~fedmodel.zoo.layers.ZeroPadShortcut`),
as in the paper's CIFAR experiments: 269,722 parameters on 32x32x3 with 10 classes.

BatchNorm mixes examples of a batch, which breaks per-example DP-SGD gradients and suffers under
non-IID federated data (Hsieh et al. 2020, "The Non-IID Data Quagmire of Decentralized Machine
Learning"); every BatchNorm is replaced by a per-example GroupNormalization (Wu and He 2018). The
default of 2 groups follows the GroupNorm ResNets of Reddi et al. 2021 ("Adaptive Federated
Optimization"). Convolutions followed by a norm have no bias.

Inputs: height and width >= 8 and divisible by 4 (the two stride-2 stages then halve them exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.errors import ConfigError
from fedmodel.zoo import checks
from fedmodel.zoo.arith import conv2d_params, dense_params, norm_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf

WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 3
MIN_SIDE = 8


@dataclass(frozen=True)
class ResNet20Hparams:
    """Hyperparameters of :mod:`fedmodel.zoo.resnet20`.

    Attributes
    ----------
    groups
        Groups of every GroupNormalization; must divide 16 (and so 32 and 64).
    """

    groups: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", checks.positive_int("groups", self.groups))
        if WIDTHS[0] % self.groups:
            raise ConfigError(f"groups must divide the channel counts {WIDTHS}, got {self.groups}")


def check_shape(input_shape: Shape) -> None:
    """Require height and width >= 8 and divisible by 4."""
    height, width = input_shape[:2]
    if min(height, width) < MIN_SIDE or height % 4 or width % 4:
        raise ConfigError(
            f"resnet20: height and width must be >= {MIN_SIDE} and divisible by 4 (default 32x32), "
            f"got input_shape {input_shape!r}"
        )


def _block_params(c_in: int, c_out: int) -> int:
    """Two 3x3 convolutions without bias, each followed by a GroupNorm; the shortcut has no weights."""
    return (
        conv2d_params(3, c_in, c_out, bias=False) + conv2d_params(3, c_out, c_out, bias=False) + 2 * norm_params(c_out)
    )


def count_params(input_shape: Shape, num_classes: int, hp: ResNet20Hparams) -> int:
    """Stem, nine basic blocks and the classifier."""
    total = conv2d_params(3, input_shape[2], WIDTHS[0], bias=False) + norm_params(WIDTHS[0])
    c_in = WIDTHS[0]
    for width in WIDTHS:
        for _ in range(BLOCKS_PER_STAGE):
            total += _block_params(c_in, width)
            c_in = width
    return total + dense_params(WIDTHS[-1], num_classes)


def build(input_shape: Shape, num_classes: int, hp: ResNet20Hparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, num_classes)``."""
    import tensorflow as tf

    from fedmodel.zoo.layers import ZeroPadShortcut

    layers = tf.keras.layers

    def conv_norm(x: tf.Tensor, width: int, stride: int) -> tf.Tensor:
        x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
        return layers.GroupNormalization(groups=hp.groups)(x)

    inputs = tf.keras.Input(shape=input_shape)
    x = layers.ReLU()(conv_norm(inputs, WIDTHS[0], 1))  # (batch, H, W, 16)
    for stage, width in enumerate(WIDTHS):
        for block in range(BLOCKS_PER_STAGE):
            stride = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(conv_norm(x, width, stride))
            y = conv_norm(y, width, 1)
            shortcut = ZeroPadShortcut(width, stride)(x) if stride > 1 or x.shape[-1] != width else x
            x = layers.ReLU()(layers.Add()([y, shortcut]))  # (batch, H / 2**stage, W / 2**stage, width)
    x = layers.GlobalAveragePooling2D()(x)  # (batch, 64)
    logits = layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="resnet20")


SPEC = ModelSpec(
    name="resnet20",
    task="classification",
    input_kind="image",
    description="ResNet-20 (He et al. 2016, CIFAR), GroupNorm instead of BatchNorm, option-A shortcuts",
    default_input_shape=(32, 32, 3),
    default_num_classes=10,
    hparams_type=ResNet20Hparams,
    builder=build,
    param_counter=count_params,
    shape_check=check_shape,
)
