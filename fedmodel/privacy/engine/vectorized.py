"""Generic per-example gradients with ``tf.vectorized_map``: works for every model, costs more.

The fast engine (:mod:`fedmodel.privacy.engine.per_example`) covers Dense, Conv2D, Embedding and the
normalization layers; this engine covers the rest (LSTM, attention, custom layers) by computing one
gradient per example, vectorized across the batch inside the compiled step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tensorflow as tf

logger = logging.getLogger(__name__)

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def per_example_gradients(
    model: tf.keras.Model, loss_fn: PerExampleLoss, x: tf.Tensor, y: tf.Tensor, weights: tf.Tensor
) -> list[tf.Tensor]:
    """Gradients of ``weights[i] * loss_i`` for every example ``i``: ``(batch, *var.shape)`` per variable."""
    variables = model.trainable_variables

    def one(example: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
        xi, yi, wi = example
        with tf.GradientTape() as tape:
            logits = model(xi[None], training=True)
            loss = tf.reduce_sum(loss_fn(yi[None], logits)) * wi
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [tf.cast(tf.convert_to_tensor(g), tf.float32) for g in grads]

    elems = (x, y, tf.cast(weights, tf.float32))
    try:
        return tf.vectorized_map(one, elems, fallback_to_while_loop=True)
    except (TypeError, ValueError, NotImplementedError) as err:
        # pfor cannot vectorize some gradients (e.g. of LSTM's while loop): loop over examples instead.
        logger.warning("per-example gradients fall back to a loop over examples (%s)", str(err).splitlines()[0])
        signature = [tf.TensorSpec(v.shape, tf.float32) for v in variables]
        return tf.map_fn(one, elems, fn_output_signature=signature)


def vectorized_clipped_sum(
    model: tf.keras.Model,
    loss_fn: PerExampleLoss,
    x: tf.Tensor,
    y: tf.Tensor,
    weights: tf.Tensor,
    *,
    clip: float,
) -> tuple[list[tf.Tensor], tf.Tensor]:
    """``(sum_i clip(grad_i), norms)`` with ``clip(g) = g * min(1, C / |g|)`` over all variables jointly.

    The per-example gradients are float32 (cast from the model's compute dtype), and so are the norms.
    """
    per = per_example_gradients(model, loss_fn, x, y, weights)
    sq = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in per])
    norms = tf.sqrt(sq)
    c = clip_factors(norms, clip)
    sums = [tf.tensordot(c, g, axes=[[0], [0]]) for g in per]
    return sums, norms


def clip_factors(norms: tf.Tensor, clip: float) -> tf.Tensor:
    """``min(1, C / norm)`` per example in float32, safe at norm 0."""
    c = tf.constant(clip, tf.float32)
    return c / tf.maximum(tf.cast(norms, tf.float32), c)
