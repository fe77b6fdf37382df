"""Shape and parameter arithmetic of Keras layers, without TensorFlow.

The analytic ``count_params`` of every zoo model is written with these helpers; the conformance test
checks each result against ``model.count_params()`` of the built Keras model.
"""

from __future__ import annotations

import math
from typing import Literal

Padding = Literal["same", "valid"]


def conv_out(size: int, *, kernel: int, stride: int, padding: Padding) -> int:
    """Output length of a Conv2D/pooling window along one spatial axis (Keras semantics).

    Returns 0 or less when a ``valid`` window does not fit.
    """
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def dense_params(n_in: int, n_out: int, *, bias: bool = True) -> int:
    """Parameters of ``Dense(n_out)`` on ``n_in`` features."""
    return n_in * n_out + (n_out if bias else 0)


def conv2d_params(kernel: int, c_in: int, c_out: int, *, bias: bool = True) -> int:
    """Parameters of ``Conv2D(c_out, kernel)`` on ``c_in`` channels."""
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def norm_params(channels: int) -> int:
    """Parameters (gamma and beta) of a LayerNormalization or GroupNormalization over ``channels``."""
    return 2 * channels


def lstm_params(n_in: int, units: int) -> int:
    """Parameters of ``LSTM(units)`` on ``n_in`` features: 4 gates x (kernel, recurrent kernel, bias)."""
    return 4 * (n_in * units + units * units + units)
