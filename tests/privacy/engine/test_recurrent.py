"""The LSTM tap: its replacement call equals Keras' LSTM, and its clipped sums equal a per-example loop."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.privacy.engine.dpsgd import ClippedSum, per_example_loss
from fedmodel.privacy.engine.recurrent import lstm_forward
from fedmodel.privacy.engine.taps import chain_layers, model_taps, unsupported_layers

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_replacement_call_equals_keras_lstm(return_sequences: bool, use_bias: bool) -> None:
    layer = tf.keras.layers.LSTM(7, return_sequences=return_sequences, use_bias=use_bias)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 9, 5)), tf.float32)
    want = layer(x)
    if use_bias:  # a non-zero bias, so that the bias path is exercised
        layer.cell.bias.assign(tf.random.stateless_normal(layer.cell.bias.shape, [1, 2]))
        want = layer(x)
    got, projected, prepared = lstm_forward(layer, x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert projected.shape == (3, 9, 28)
    assert prepared.shape == (3, 9, 5 + 7)
    np.testing.assert_array_equal(prepared[:, 0, 5:].numpy(), 0.0)  # h_0 = 0


def brute_force(
    model: tf.keras.Model, x: np.ndarray, y: np.ndarray, clip: float
) -> tuple[list[np.ndarray], np.ndarray]:
    loss_fn = per_example_loss(LOSS)
    sums = [np.zeros(v.shape) for v in model.trainable_variables]
    norms = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(y[i : i + 1], model(x[i : i + 1], training=True)))
        grads = [
            tf.convert_to_tensor(g).numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)
        ]
        norm = np.sqrt(sum(np.sum(g**2) for g in grads))
        norms.append(norm)
        for s, g in zip(sums, grads, strict=True):
            s += g * min(1.0, clip / norm)
    return sums, np.array(norms)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_lstm_clipped_sums_equal_a_per_example_loop(return_sequences: bool) -> None:
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((5,), dtype="int32"),
            tf.keras.layers.Embedding(11, 4),
            tf.keras.layers.LSTM(6, return_sequences=True),
            tf.keras.layers.LSTM(5, return_sequences=return_sequences, use_bias=False),
            tf.keras.layers.Dense(11),
        ]
    )
    rng = np.random.default_rng(1)
    x = rng.integers(0, 11, (6, 5)).astype(np.int32)
    y = rng.integers(0, 11, (6, 5) if return_sequences else (6,))
    engine = ClippedSum(model, per_example_loss(LOSS), clip=0.05, engine="fast")
    assert engine.engine == "fast"
    sums, norms, _, logits = engine(tf.constant(x), tf.constant(y), tf.ones(6))
    np.testing.assert_allclose(logits.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    want_sums, want_norms = brute_force(model, x, y, 0.05)
    np.testing.assert_allclose(norms.numpy(), want_norms, rtol=1e-4)
    assert (want_norms > 0.05).any()
    for got, want in zip(sums, want_sums, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_an_lstm_outside_a_chain_is_left_to_the_vectorized_engine() -> None:
    inputs = tf.keras.Input((4, 3))
    h = tf.keras.layers.LSTM(2, return_sequences=True)(inputs)
    merged = tf.keras.layers.Concatenate()([h, inputs])  # a skip connection: not a chain
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(merged))
    assert chain_layers(model) is None
    assert model_taps(model) is None
    assert any("not a chain" in reason for reason in unsupported_layers(model))
    assert ClippedSum(model, per_example_loss(LOSS), clip=1.0, engine="auto").engine == "vectorized"


def test_masked_lstm_inputs_are_not_tapped() -> None:
    model = tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Embedding(5, 3, mask_zero=True), tf.keras.layers.LSTM(2)]
    )
    assert model_taps(model) is None
