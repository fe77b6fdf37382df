"""The fast engine's convolution patches equal tf.image.extract_patches for every stride and padding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.privacy.per_example import _patches

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
