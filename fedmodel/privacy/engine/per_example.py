"""Per-example gradient norms and clipped gradient sums, layer by layer, from one backward pass.

Vocabulary (after Goodfellow 2015, Li et al. 2022 "ghost clipping", Bu et al. 2023 "book-keeping"):

- a layer's **input** ``a`` and the gradient ``g`` of the summed per-example losses with respect to its
  **pre-activation output** ``z`` are enough to recover every example's gradient of that layer's weights:
  for a Dense layer ``grad_W[i] = a[i]^T g[i]`` (summed over time steps for sequences);
- an example's **squared norm** is the sum over layers of the squared Frobenius norms of those per-example
  gradients, computed without forming them where that is cheaper ("ghost norm": ``|a_i|^2 |g_i|^2``);
- the **clipped sum** ``sum_i c_i grad[i]`` with ``c_i = min(1, C / norm_i)`` is one more contraction
  per layer (``a^T (c * g)``), so no second backward pass is needed.

A :class:`LayerTap` describes one layer whose per-example gradients this module can compute. Models whose
trainable layers are all tappable run DP-SGD at close to the cost of a non-private step; other models use the
generic vectorized engine (:mod:`fedmodel.privacy.engine.vectorized`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf

Grads = list[tf.Tensor]


@dataclasses.dataclass(frozen=True)
class LayerTap:
    """One trainable layer: how to get its pre-activation gradient and its per-example gradients.

    ``prepare(a, g)`` turns the layer input ``a`` and pre-activation gradient ``g`` into a state that the
    other two share (computed once per step: e.g. a convolution's input patches, or its per-example
    gradients); ``sq_norms(state)`` returns ``(batch,)`` squared norms over all the layer's weights;
    ``clipped_sum(state, c)`` returns ``sum_i c_i grad_i`` per weight, in ``layer.trainable_weights`` order.

    Most layers run as themselves and ``g`` is the gradient of their output. A layer whose per-example
    gradients need an internal tensor (an LSTM's gate pre-activations) has a ``forward(a)`` that replaces
    its call and returns ``(output, tapped, prepared_input)``: ``g`` is then the gradient of ``tapped`` and
    ``prepare`` receives ``prepared_input`` in place of ``a``.
    """

    layer: tf.keras.layers.Layer
    sq_norms: Callable[[Any], tf.Tensor]
    clipped_sum: Callable[[Any, tf.Tensor], Grads]
    has_activation: bool
    prepare: Callable[[tf.Tensor, tf.Tensor], Any] = lambda a, g: (a, g)
    forward: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]] | None = None

    def pre_activation_grad(self, a: tf.Tensor, y: tf.Tensor, g_y: tf.Tensor) -> tf.Tensor:
        """``dL/dz`` from the layer input ``a``, its output ``y = act(z)`` and ``dL/dy``."""
        if not self.has_activation:
            return g_y
        z = _linear_part(self.layer, a)
        with tf.GradientTape() as tape:
            tape.watch(z)
            out = self.layer.activation(z)
        return tape.gradient(out, z, output_gradients=g_y)


def _f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _linear_part(layer: tf.keras.layers.Layer, a: tf.Tensor) -> tf.Tensor:
    """Recompute ``z`` (before the activation) of a Dense or Conv2D layer from its input."""
    a = tf.cast(a, layer.compute_dtype)
    kernel = tf.cast(layer.kernel, layer.compute_dtype)
    if isinstance(layer, tf.keras.layers.Conv2D):
        z = tf.nn.conv2d(a, kernel, strides=layer.strides, padding=layer.padding.upper())
    else:
        z = tf.tensordot(a, kernel, axes=[[a.shape.rank - 1], [0]])
    if layer.use_bias:
        z = z + tf.cast(layer.bias, layer.compute_dtype)
    return z


# -- Dense and Conv2D: a sequence of (input row, output-gradient row) pairs per example ----------------


def as_sequence(a: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Reshape to (batch, time, features) so dense-on-vectors is the time == 1 case."""
    batch = tf.shape(a)[0]
    return tf.reshape(_f32(a), [batch, -1, a.shape[-1]]), tf.reshape(_f32(g), [batch, -1, g.shape[-1]])


def matmul_sq_norms(a: tf.Tensor, g: tf.Tensor, *, use_bias: bool) -> tf.Tensor:
    """Squared norms of per-example ``sum_t a_t g_t^T`` (and ``sum_t g_t`` for the bias)."""
    time, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    if time == 1:  # ghost norm: |a|^2 |g|^2
        sq = tf.reduce_sum(tf.square(a[:, 0]), 1) * tf.reduce_sum(tf.square(g[:, 0]), 1)
    elif time is not None and time * time * (d_in + d_out) < time * d_in * d_out:
        aa = tf.einsum("bti,bsi->bts", a, a)  # (batch, time, time)
        gg = tf.einsum("btj,bsj->bts", g, g)
        sq = tf.reduce_sum(aa * gg, axis=[1, 2])
    else:  # form the per-example gradients: cheaper when time^2 exceeds d_in*d_out/(d_in+d_out)
        per = tf.linalg.matmul(a, g, adjoint_a=True)  # (batch, d_in, d_out)
        sq = tf.reduce_sum(tf.square(per), axis=[1, 2])
    if use_bias:
        sq += tf.reduce_sum(tf.square(tf.reduce_sum(g, axis=1)), axis=1)
    return sq


def matmul_clipped_sum(a: tf.Tensor, g: tf.Tensor, c: tf.Tensor, *, use_bias: bool) -> Grads:
    gc = g * c[:, None, None]
    out = [tf.einsum("bti,btj->ij", a, gc)]
    if use_bias:
        out.append(tf.reduce_sum(gc, axis=[0, 1]))
    return out


def dense_tap(layer: tf.keras.layers.Dense) -> LayerTap:
    def sq_norms(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return matmul_sq_norms(*state, use_bias=layer.use_bias)

    def clipped_sum(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
        return matmul_clipped_sum(*state, c, use_bias=layer.use_bias)

    return LayerTap(layer, sq_norms, clipped_sum, has_activation=has_activation(layer), prepare=as_sequence)


def _patch_geometry(layer: tf.keras.layers.Conv2D, height: int, width: int) -> tuple[int, int, int, int]:
    """``(out_h, out_w, top, left)``: output size and the top/left zero padding of ``layer``."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    if layer.padding == "same":
        out_h, out_w = -(-height // sh), -(-width // sw)
        ph, pw = max((out_h - 1) * sh + kh - height, 0), max((out_w - 1) * sw + kw - width, 0)
        return out_h, out_w, ph // 2, pw // 2
    return (height - kh) // sh + 1, (width - kw) // sw + 1, 0, 0


def _patches(layer: tf.keras.layers.Conv2D, a: tf.Tensor, *, ordered: bool = True) -> tf.Tensor:
    """Input patches (batch, positions, kh*kw*cin), ordered as the kernel's first three axes.

    Gathered with strided slices of the (padded) input, ``ceil(kh/s) * ceil(kw/s)`` of them: a strided
    convolution is first folded into a stride-1 one with ``space_to_depth``. On CPU this is several times
    faster than ``tf.image.extract_patches``. With ``ordered=False`` and a kernel that is a multiple of the
    stride, each patch holds the same values in another order (what norms and Gram matrices need), which
    saves a transpose.
    """
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    a = _f32(a)
    batch, cin = tf.shape(a)[0], a.shape[-1]
    height, width = a.shape[1], a.shape[2]
    out_h, out_w, top, left = _patch_geometry(layer, height, width)
    if sh != sw:  # space_to_depth needs one block size
        p = tf.image.extract_patches(
            a, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, 1, 1, 1], padding=layer.padding.upper()
        )
        return tf.reshape(p, [batch, -1, kh * kw * cin])
    s = sh
    qh, qw = -(-kh // s), -(-kw // s)  # kernel size in blocks
    need_h, need_w = (out_h - 1 + qh) * s, (out_w - 1 + qw) * s  # padded extent, a multiple of s
    a = tf.pad(a, [[0, 0], [top, max(need_h - height - top, 0)], [left, max(need_w - width - left, 0)], [0, 0]])
    a = a[:, :need_h, :need_w, :]
    if s > 1:
        a = tf.nn.space_to_depth(a, s)  # (batch, need_h/s, need_w/s, s*s*cin), channels ordered (ry, rx, cin)
    columns = [a[:, qy : qy + out_h, qx : qx + out_w, :] for qy in range(qh) for qx in range(qw)]
    if not ordered and qh * s == kh and qw * s == kw:
        return tf.reshape(tf.concat(columns, axis=3), [batch, out_h * out_w, kh * kw * cin])
    p = tf.stack(columns, axis=3)  # (batch, out_h, out_w, qh*qw, s*s*cin)
    p = tf.reshape(p, [batch, out_h, out_w, qh, qw, s, s, cin])
    p = tf.transpose(p, [0, 1, 2, 3, 5, 4, 6, 7])  # (..., qh, ry, qw, rx, cin): dy = qy*s + ry
    p = tf.reshape(p, [batch, out_h, out_w, qh * s, qw * s, cin])[:, :, :, :kh, :kw, :]
    return tf.reshape(p, [batch, out_h * out_w, kh * kw * cin])


def _single_channel_grads(layer: tf.keras.layers.Conv2D, a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Per-example kernel gradients ``(batch, kh, kw, cout)`` of a convolution with one input channel.

    The batch is folded into the channels of one image, so one depthwise filter gradient (a native op)
    computes all of them: channel ``i`` of the folded input pairs with example ``i``'s output gradient.
    About twice as fast on CPU as gathering patches for the first layer of an image model.
    """
    kh, kw = layer.kernel_size
    batch, cout = tf.shape(a)[0], g.shape[-1]
    image = tf.transpose(_f32(a), [3, 1, 2, 0])  # (1, height, width, batch)
    out = tf.reshape(tf.transpose(_f32(g), [1, 2, 0, 3]), [1, g.shape[1], g.shape[2], -1])  # (.., batch*cout)
    per = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
        input=image,
        filter_sizes=tf.stack([kh, kw, batch, cout]),
        out_backprop=out,
        strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(),
    )  # (kh, kw, batch, cout)
    return tf.transpose(per, [2, 0, 1, 3])


def _conv_tap_plain(layer: tf.keras.layers.Conv2D) -> LayerTap:
    kernel_shape = layer.kernel.shape
    use_bias = layer.use_bias

    def bias_terms(g: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(g, axis=[1, 2])  # (batch, cout): per-example bias gradients

    if tuple(layer.kernel_size) == (1, 1):  # a Dense layer on the strided input

        def prepare_pointwise(a: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            sh, sw = layer.strides
            return as_sequence(a[:, ::sh, ::sw, :], g)

        def sq_norms_pointwise(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            return matmul_sq_norms(*state, use_bias=use_bias)

        def clipped_sum_pointwise(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
            kernel, *bias = matmul_clipped_sum(*state, c, use_bias=use_bias)
            return [tf.reshape(kernel, kernel_shape), *bias]

        return LayerTap(
            layer,
            sq_norms_pointwise,
            clipped_sum_pointwise,
            has_activation=has_activation(layer),
            prepare=prepare_pointwise,
        )

    if kernel_shape[2] == 1 and layer.strides[0] == layer.strides[1]:

        def prepare_single(a: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return _single_channel_grads(layer, a, g), bias_terms(_f32(g))

        def sq_norms_single(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            sq = tf.reduce_sum(tf.square(state[0]), axis=[1, 2, 3])
            return sq + tf.reduce_sum(tf.square(state[1]), axis=1) if use_bias else sq

        def clipped_sum_single(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
            kernel = tf.reshape(tf.einsum("bhwo,b->hwo", state[0], c), kernel_shape)
            return [kernel, tf.linalg.matvec(state[1], c, transpose_a=True)] if use_bias else [kernel]

        return LayerTap(
            layer, sq_norms_single, clipped_sum_single, has_activation=has_activation(layer), prepare=prepare_single
        )

    def prepare(a: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        g32 = _f32(g)
        return _f32(a), _patches(layer, a, ordered=False), g32

    def sq_norms(state: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        _, patches, g = state
        return matmul_sq_norms(patches, tf.reshape(g, [tf.shape(g)[0], -1, g.shape[-1]]), use_bias=use_bias)

    def clipped_sum(state: tuple[tf.Tensor, tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
        # The clipped sum is an ordinary filter gradient of the output gradient scaled per example.
        a, _, g = state
        gc = g * c[:, None, None, None]
        kernel = tf.raw_ops.Conv2DBackpropFilter(
            input=a,
            filter_sizes=kernel_shape,
            out_backprop=gc,
            strides=[1, *layer.strides, 1],
            padding=layer.padding.upper(),
        )
        return [kernel, tf.reduce_sum(gc, axis=[0, 1, 2])] if use_bias else [kernel]

    return LayerTap(layer, sq_norms, clipped_sum, has_activation=has_activation(layer), prepare=prepare)


# -- Embedding -------------------------------------------------------------------------------------


def _embedding_sq_norms(ids: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """|sum_t onehot(id_t) g_t^T|^2 = sum_{t,s} [id_t == id_s] g_t . g_s."""
    batch = tf.shape(g)[0]
    ids = tf.reshape(ids, [batch, -1])
    g = tf.reshape(_f32(g), [batch, tf.shape(ids)[1], g.shape[-1]])
    same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), tf.float32)  # (batch, time, time)
    return tf.reduce_sum(same * tf.einsum("btd,bsd->bts", g, g), axis=[1, 2])


def _embedding_clipped_sum(ids: tf.Tensor, g: tf.Tensor, c: tf.Tensor, vocab: int) -> tf.Tensor:
    gc = _f32(g) * tf.reshape(c, [-1] + [1] * (g.shape.rank - 1))
    return tf.math.unsorted_segment_sum(tf.reshape(gc, [-1, g.shape[-1]]), tf.reshape(ids, [-1]), vocab)


def embedding_tap(layer: tf.keras.layers.Embedding) -> LayerTap:
    def sq_norms(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return _embedding_sq_norms(*state)

    def clipped_sum(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
        return [_embedding_clipped_sum(*state, c, layer.input_dim)]

    return LayerTap(layer, sq_norms, clipped_sum, has_activation=False, prepare=_ids_and_grad)


def _ids_and_grad(a: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(a, tf.int32), g


def token_position_tap(layer: tf.keras.layers.Layer) -> LayerTap:
    """fedmodel's TokenAndPositionEmbedding: a token table plus a learned position table."""
    token_table, position_table = layer.token_embedding, layer.position_embedding
    weights = [w.ref() for w in layer.trainable_weights]
    order = [weights.index(token_table.embeddings.ref()), weights.index(position_table.embeddings.ref())]

    def sq_norms(state: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        # Position t receives g_t from every example exactly once: its per-example gradient is g itself.
        ids, g = state
        return _embedding_sq_norms(ids, g) + tf.reduce_sum(tf.square(_f32(g)), axis=[1, 2])

    def clipped_sum(state: tuple[tf.Tensor, tf.Tensor], c: tf.Tensor) -> Grads:
        ids, g = state
        tokens = _embedding_clipped_sum(ids, g, c, token_table.input_dim)
        time = tf.shape(g)[1]
        positions = tf.reduce_sum(_f32(g) * c[:, None, None], axis=0)  # (time, d)
        positions = tf.pad(positions, [[0, position_table.input_dim - time], [0, 0]])
        out: Grads = [tokens, positions]
        return [out[order.index(i)] for i in range(2)]

    return LayerTap(layer, sq_norms, clipped_sum, has_activation=False, prepare=_ids_and_grad)


# -- Normalization layers: scale and offset per feature ----------------------------------------------


def _affine_norm_tap(layer: tf.keras.layers.Layer, normalize: Callable[[tf.Tensor], tf.Tensor]) -> LayerTap:
    """LayerNorm / GroupNorm: per-example ``gamma_i = sum g * xhat``, ``beta_i = sum g`` over positions."""

    def per_example(a: tf.Tensor, g: tf.Tensor) -> list[tf.Tensor]:
        xhat = normalize(_f32(a))
        batch, features = tf.shape(g)[0], g.shape[-1]
        g32 = tf.reshape(_f32(g), [batch, -1, features])
        out = []
        if layer.scale:
            out.append(tf.reduce_sum(g32 * tf.reshape(xhat, [batch, -1, features]), axis=1))
        if layer.center:
            out.append(tf.reduce_sum(g32, axis=1))
        return out

    def sq_norms(per: list[tf.Tensor]) -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(tf.square(p), axis=1) for p in per])

    def clipped_sum(per: list[tf.Tensor], c: tf.Tensor) -> Grads:
        return [tf.reduce_sum(p * c[:, None], axis=0) for p in per]

    return LayerTap(layer, sq_norms, clipped_sum, has_activation=False, prepare=per_example)


def layer_norm_tap(layer: tf.keras.layers.LayerNormalization) -> LayerTap | None:
    if list(layer.axis) != [len(layer.input_shape) - 1]:
        return None

    def normalize(x: tf.Tensor) -> tf.Tensor:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + layer.epsilon)

    return _affine_norm_tap(layer, normalize)


def group_norm_tap(layer: tf.keras.layers.GroupNormalization) -> LayerTap | None:
    if layer.axis not in (-1, len(layer.input_shape) - 1):
        return None
    groups = layer.groups

    def normalize(x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        channels = x.shape[-1]
        grouped = tf.reshape(x, tf.concat([shape[:-1], [groups, channels // groups]], 0))
        axes = [*list(range(1, x.shape.rank - 1)), x.shape.rank]
        mean, var = tf.nn.moments(grouped, axes=axes, keepdims=True)
        return tf.reshape((grouped - mean) * tf.math.rsqrt(var + layer.epsilon), shape)

    return _affine_norm_tap(layer, normalize)


def has_activation(layer: tf.keras.layers.Layer) -> bool:
    return layer.activation is not tf.keras.activations.linear


def conv_tap(layer: tf.keras.layers.Conv2D) -> LayerTap | None:
    """The tap of a plain Conv2D (no dilation, no groups, channels last), else ``None``."""
    plain = tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1 and layer.data_format == "channels_last"
    return _conv_tap_plain(layer) if plain else None
