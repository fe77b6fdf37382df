"""Character-level LSTM language model: the Shakespeare model of LEAF and TensorFlow Federated.

``Embedding(vocab, 8) -> LSTM(256) x 2 (return_sequences) -> Dense(vocab)``; ``num_classes`` is the
vocabulary size (default 86 characters) and the model predicts the next token at every position:
input ``(batch, sequence_length)`` int ids, output ``(batch, sequence_length, vocab)`` logits.
Defaults: Caldas et al. 2018 (LEAF) and TFF's ``shakespeare`` baseline (sequence length 80).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmodel.zoo import checks
from fedmodel.zoo.arith import dense_params, lstm_params
from fedmodel.zoo.spec import ModelSpec, Shape

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class LSTMHparams:
    """Hyperparameters of :mod:`fedmodel.zoo.lstm`.

    Attributes
    ----------
    embedding_dim
        Size of the character embedding.
    units
        Units of every LSTM layer.
    layers
        Number of stacked LSTM layers.
    """

    embedding_dim: int = 8
    units: int = 256
    layers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "embedding_dim", checks.positive_int("embedding_dim", self.embedding_dim))
        object.__setattr__(self, "units", checks.positive_int("units", self.units))
        object.__setattr__(self, "layers", checks.positive_int("layers", self.layers))


def count_params(input_shape: Shape, num_classes: int, hp: LSTMHparams) -> int:
    """Embedding table, the LSTM stack and the output projection."""
    total = num_classes * hp.embedding_dim + lstm_params(hp.embedding_dim, hp.units)
    total += (hp.layers - 1) * lstm_params(hp.units, hp.units)
    return total + dense_params(hp.units, num_classes)


def build(input_shape: Shape, num_classes: int, hp: LSTMHparams) -> tf.keras.Model:
    """Build the model; outputs logits ``(batch, sequence_length, num_classes)``."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=input_shape, dtype="int32")
    x = tf.keras.layers.Embedding(num_classes, hp.embedding_dim)(inputs)  # (batch, time, embedding_dim)
    for _ in range(hp.layers):
        x = tf.keras.layers.LSTM(hp.units, return_sequences=True)(x)  # (batch, time, units)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(x)  # (batch, time, vocab)
    return tf.keras.Model(inputs, logits, name="lstm")


SPEC = ModelSpec(
    name="lstm",
    task="next-token",
    input_kind="tokens",
    description="Char-level 2x256 LSTM language model of LEAF/TFF Shakespeare",
    default_input_shape=(80,),
    default_num_classes=86,
    hparams_type=LSTMHparams,
    builder=build,
    param_counter=count_params,
)
