"""Custom Keras layers of the zoo (imports TensorFlow; the builders import this module lazily).

Every layer is registered under the ``fedmodel`` package and implements ``get_config``, so
``tf.keras.Model.from_config(model.get_config())`` round-trips a zoo model once this module is imported.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from fedmodel.zoo import checks


@tf.keras.utils.register_keras_serializable(package="fedmodel")
class TokenAndPositionEmbedding(tf.keras.layers.Layer):
    """Token embedding plus a learned absolute position embedding (as in GPT-2 / nanoGPT).

    Input ``(batch, time)`` int ids with ``time <= sequence_length``; output ``(batch, time, embed_dim)``.
    Parameters: ``(vocab_size + sequence_length) * embed_dim``.
    """

    def __init__(self, vocab_size: int, sequence_length: int, embed_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = checks.positive_int("vocab_size", vocab_size)
        self.sequence_length = checks.positive_int("sequence_length", sequence_length)
        self.embed_dim = checks.positive_int("embed_dim", embed_dim)
        self.token_embedding = tf.keras.layers.Embedding(vocab_size, embed_dim, name="token")
        self.position_embedding = tf.keras.layers.Embedding(sequence_length, embed_dim, name="position")

    def call(self, token_ids: tf.Tensor) -> tf.Tensor:
        positions = tf.range(tf.shape(token_ids)[-1])  # (time,)
        return self.token_embedding(token_ids) + self.position_embedding(positions)  # (batch, time, embed)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(vocab_size=self.vocab_size, sequence_length=self.sequence_length, embed_dim=self.embed_dim)
        return config


@tf.keras.utils.register_keras_serializable(package="fedmodel")
class ZeroPadShortcut(tf.keras.layers.Layer):
    """Parameter-free ResNet shortcut ("option A" of He et al. 2016, Sec. 4.2).

    Subsamples ``(batch, height, width, channels)`` by ``stride`` and appends zero channels up to
    ``channels``; an identity when ``stride == 1`` and the channel count already matches.
    """

    def __init__(self, channels: int, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels = checks.positive_int("channels", channels)
        self.stride = checks.positive_int("stride", stride)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = inputs[:, :: self.stride, :: self.stride, :]  # (batch, height / stride, width / stride, c_in)
        extra = self.channels - inputs.shape[-1]
        if extra < 0:
            raise ValueError(
                f"ZeroPadShortcut: expected at most {self.channels} input channels, got {inputs.shape[-1]}"
            )
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])  # (..., channels)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(channels=self.channels, stride=self.stride)
        return config
