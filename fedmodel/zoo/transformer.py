"""A small decoder-only (causal) Transformer language model in the style of nanoGPT / GPT-2.

Token + learned position embedding, ``layers`` pre-LayerNorm blocks, a final LayerNorm and
``Dense(vocab)`` logits::

    x = embed(tokens)                                 # (batch, time, d_model)
    x = x + Dropout(CausalMHA(LayerNorm(x)))          # heads of size d_model / heads
    x = x + Dropout(MLP(LayerNorm(x)))                # Dense(4 d_model, gelu) -> Dense(d_model)
    logits = Dense(vocab)(LayerNorm(x))               # (batch, time, vocab)

``num_classes`` is the vocabulary size and the input length fixes the position table. LayerNorm
normalizes each position of each example on its own, so per-example DP-SGD gradients are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.errors import ConfigError
from fedmodel.zoo import checks
from fedmodel.zoo.arith import dense_params, norm_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf

MLP_RATIO = 4


@dataclass(frozen=True)
class TransformerHparams:
    """Hyperparameters of :mod:`fedmodel.zoo.transformer`.

    Attributes
    ----------
    d_model
        Width of the residual stream; must be divisible by ``heads``.
    heads
        Attention heads per block.
    layers
        Number of Transformer blocks.
    dropout
        Dropout rate on the embedding, the attention weights and each residual branch, in ``[0, 1)``.
    """

    d_model: int = 64
    heads: int = 4
    layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_model", checks.positive_int("d_model", self.d_model))
        object.__setattr__(self, "heads", checks.positive_int("heads", self.heads))
        object.__setattr__(self, "layers", checks.positive_int("layers", self.layers))
        object.__setattr__(self, "dropout", checks.dropout_rate("dropout", self.dropout))
        if self.d_model % self.heads:
            raise ConfigError(f"d_model must be divisible by heads={self.heads}, got {self.d_model}")


def _block_params(d: int) -> int:
    """Two LayerNorms, Q/K/V/output projections with biases, and the MLP."""
    attention = 4 * dense_params(d, d)
    mlp = dense_params(d, MLP_RATIO * d) + dense_params(MLP_RATIO * d, d)
    return 2 * norm_params(d) + attention + mlp


def count_params(input_shape: Shape, num_classes: int, hp: TransformerHparams) -> int:
    """Embeddings, the blocks, the final LayerNorm and the output projection."""
    d = hp.d_model
    embeddings = (num_classes + input_shape[0]) * d
    return embeddings + hp.layers * _block_params(d) + norm_params(d) + dense_params(d, num_classes)


def build(input_shape: Shape, num_classes: int, hp: TransformerHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, sequence_length, num_classes)``."""
    import tensorflow as tf

    from fedmodel.zoo.layers import TokenAndPositionEmbedding

    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, dtype="int32")
    x = TokenAndPositionEmbedding(num_classes, input_shape[0], hp.d_model)(inputs)  # (batch, time, d)
    x = layers.Dropout(hp.dropout)(x)
    for _ in range(hp.layers):
        h = layers.LayerNormalization()(x)
        h = layers.MultiHeadAttention(hp.heads, hp.d_model // hp.heads, dropout=hp.dropout)(h, h, use_causal_mask=True)
        x = layers.Add()([x, layers.Dropout(hp.dropout)(h)])
        h = layers.LayerNormalization()(x)
        h = layers.Dense(MLP_RATIO * hp.d_model)(h)
        h = layers.Activation("gelu")(h)  # (batch, time, 4 d)
        h = layers.Dense(hp.d_model)(h)
        x = layers.Add()([x, layers.Dropout(hp.dropout)(h)])
    x = layers.LayerNormalization()(x)
    logits = layers.Dense(num_classes, name="logits")(x)  # (batch, time, vocab)
    return tf.keras.Model(inputs, logits, name="transformer")


SPEC = ModelSpec(
    name="transformer",
    task="next-token",
    input_kind="tokens",
    description="Small causal Transformer LM (nanoGPT-style, pre-LayerNorm, learned positions)",
    default_input_shape=(80,),
    default_num_classes=86,
    hparams_type=TransformerHparams,
    builder=build,
    param_counter=count_params,
)
