"""The fast engine's convolutions: patches equal tf.image.extract_patches, taps equal per-example gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.privacy.engine.per_example import _conv_tap_plain, _patches

CASES = [
    case
    for case in itertools.product([8, 13, 28], [1, 3, 4, 5, 8], [1, 2, 3], ["same", "valid"], [1, 3])
    if not (case[3] == "valid" and case[1] > case[0])
]


@pytest.mark.parametrize(("size", "kernel", "stride", "padding", "channels"), CASES)
def test_patches_equal_extract_patches(size: int, kernel: int, stride: int, padding: str, channels: int) -> None:
    layer = tf.keras.layers.Conv2D(2, kernel, strides=stride, padding=padding)
    a = tf.constant(np.random.default_rng(size * kernel + stride).normal(size=(2, size, size, channels)), tf.float32)
    layer(a)
    sizes, strides = [1, kernel, kernel, 1], [1, stride, stride, 1]
    want = tf.image.extract_patches(a, sizes=sizes, strides=strides, rates=[1, 1, 1, 1], padding=padding.upper())
    got = _patches(layer, a)
    np.testing.assert_array_equal(got.numpy(), tf.reshape(want, [2, -1, kernel * kernel * channels]).numpy())


CONV_CASES = [
    (size, kernel, strides, padding, channels)
    for size, kernel, strides, padding, channels in itertools.product(
        [7, 12], [1, 3, 4], [(1, 1), (2, 2), (3, 3), (1, 2)], ["same", "valid"], [1, 3]
    )
]


def per_example_filter_gradients(layer: tf.keras.layers.Conv2D, a: tf.Tensor, g: tf.Tensor) -> list[np.ndarray]:
    """Each example's kernel and bias gradients from tf.image.extract_patches and a numpy contraction.

    Not from TensorFlow's own filter gradient: in TF 2.14 on CPU, Conv2DBackpropFilter with a 1x1 kernel
    and stride 2 on a 12x12 input corrupts the heap (reproduced eagerly and in a tf.function).
    """
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    p = tf.image.extract_patches(a, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], layer.padding.upper()).numpy()
    p = p.reshape(len(a), -1, p.shape[-1]).astype(np.float64)
    g64 = g.numpy().reshape(len(a), -1, g.shape[-1]).astype(np.float64)
    kernels = np.einsum("bti,btj->bij", p, g64).reshape(len(a), *layer.kernel.shape)
    return [kernels, g64.sum(axis=1)]


@pytest.mark.parametrize(("size", "kernel", "strides", "padding", "channels"), CONV_CASES)
def test_conv_tap_equals_per_example_filter_gradients(
    size: int, kernel: int, strides: tuple[int, int], padding: str, channels: int
) -> None:
    """Every conv path: pointwise, single-channel depthwise, order-free patches, ordered and extract_patches."""
    layer = tf.keras.layers.Conv2D(5, kernel, strides=strides, padding=padding)
    rng = np.random.default_rng(size + 10 * kernel + 100 * strides[1] + channels)
    a = tf.constant(rng.normal(size=(4, size, size, channels)), tf.float32)
    g = tf.constant(rng.normal(size=layer(a).shape), tf.float32)
    kernels, biases = per_example_filter_gradients(layer, a, g)
    want_norms = np.sqrt(np.sum(kernels**2, axis=(1, 2, 3, 4)) + np.sum(biases**2, axis=1))
    c = np.array([1.0, 0.5, 0.0, 2.0])
    want_sums = [np.tensordot(c, kernels, 1), c @ biases]

    tap = _conv_tap_plain(layer)
    state = tap.prepare(a, g)
    np.testing.assert_allclose(np.sqrt(tap.sq_norms(state).numpy()), want_norms, rtol=1e-5)
    for got, want in zip(tap.clipped_sum(state, tf.constant(c, tf.float32)), want_sums, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
