"""Per-example gradients of an LSTM layer from its gate pre-activations.

An LSTM's gates at step ``t`` are ``z_t = x_t W + h_{t-1} U + b``: a Dense layer applied to the
concatenation ``[x_t, h_{t-1}]`` with weights ``[W; U]``. So each example's gradients are
``sum_t [x_t, h_{t-1}]^T dz_t`` (and ``sum_t dz_t`` for the bias), and the Dense machinery of
:mod:`fedmodel.privacy.engine.per_example` gives their norms (ghost norms through per-example Gram matrices over
time) and clipped sums, once ``dz`` is known.

``dz`` lives inside the recurrence, so the tap replaces the layer's call with the same arithmetic written
so that ``x W + b`` is one tensor computed before the loop: its gradient is ``dz``, produced by the one
backward pass the step already does. The replacement matches Keras' LSTM (gate order i, f, c, o) to
float32 round-off (tested), and is used only for configurations it covers: no masking, dropout, state
or reversed/unrolled/time-major sequences.
"""

from __future__ import annotations

import tensorflow as tf

from fedmodel.privacy.engine.per_example import Grads, LayerTap, as_sequence, matmul_clipped_sum, matmul_sq_norms


def _covered(layer: tf.keras.layers.LSTM) -> bool:
    plain = not (layer.return_state or layer.go_backwards or layer.stateful or layer.unroll or layer.time_major)
    no_dropout = layer.dropout == 0 and layer.recurrent_dropout == 0
    return plain and no_dropout and layer.input_mask is None


def lstm_forward(layer: tf.keras.layers.LSTM, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(output, x W + b, [x_t, h_{t-1}])`` of a Keras LSTM layer on ``x`` (batch, time, features)."""
    cell = layer.cell
    dtype = layer.compute_dtype
    x = tf.cast(x, dtype)
    projected = tf.tensordot(x, tf.cast(cell.kernel, dtype), axes=[[2], [0]])  # (batch, time, 4 units)
    if layer.use_bias:
        projected += tf.cast(cell.bias, dtype)
    recurrent = tf.cast(cell.recurrent_kernel, dtype)
    zeros = tf.zeros(tf.stack([tf.shape(x)[0], layer.units]), dtype)

    def step(carry: tuple[tf.Tensor, tf.Tensor], z_in: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h, c = carry
        z_i, z_f, z_c, z_o = tf.split(z_in + tf.matmul(h, recurrent), 4, axis=1)
        c = cell.recurrent_activation(z_f) * c + cell.recurrent_activation(z_i) * cell.activation(z_c)
        return cell.recurrent_activation(z_o) * cell.activation(c), c

    hs, _ = tf.scan(step, tf.transpose(projected, [1, 0, 2]), initializer=(zeros, zeros))
    h_seq = tf.transpose(hs, [1, 0, 2])  # (batch, time, units)
    h_prev = tf.concat([zeros[:, None, :], h_seq[:, :-1, :]], axis=1)
    output = h_seq if layer.return_sequences else h_seq[:, -1, :]
    return output, projected, tf.concat([x, h_prev], axis=2)


def lstm_tap(layer: tf.keras.layers.LSTM) -> LayerTap | None:
    """The tap of a Keras LSTM layer, or ``None`` for configurations the replacement call does not cover."""
    if not _covered(layer):
        return None
    cell = layer.cell
    split = cell.kernel.shape[0]
    own = [cell.kernel, cell.recurrent_kernel, *([cell.bias] if layer.use_bias else [])]
    positions = [w.ref() for w in own]
    order = [positions.index(w.ref()) for w in layer.trainable_weights]

    def sq_norms(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return matmul_sq_norms(*state, use_bias=layer.use_bias)

    def clipped_sum(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
        stacked, *bias = matmul_clipped_sum(*state, c, use_bias=layer.use_bias)
        sums = [stacked[:split], stacked[split:], *bias]
        return [sums[i] for i in order]

    return LayerTap(
        layer,
        sq_norms,
        clipped_sum,
        has_activation=False,
        prepare=as_sequence,
        forward=lambda a: lstm_forward(layer, a),
    )
