"""A seeded, learnable synthetic image dataset for tests and smoke runs.

Each class has a random template image with pixels uniform in [0, 1]; an example is its class
template plus Gaussian pixel noise, clipped to [0, 1]. With the default noise the classes are
separable (a nearest-template classifier is almost always right), so a model that trains
correctly learns it in a few steps.
"""

from __future__ import annotations

import math

import numpy as np

from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.errors import ConfigError


def make_synthetic(
    *,
    num_examples: int = 1000,
    input_shape: tuple[int, ...] = (8, 8, 1),
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 0.3,
    test_fraction: float = 0.2,
) -> Dataset:
    """Generate a synthetic classification dataset.

    Parameters
    ----------
    num_examples : int
        Total examples (train + test); classes are balanced up to one example.
    input_shape : tuple of int
        Shape of one example, e.g. ``(8, 8, 1)`` or ``(16,)``.
    num_classes : int
        Number of classes, >= 2.
    seed : int
        Seed for templates, noise, label order and the split.
    noise : float
        Standard deviation of the Gaussian pixel noise (pixels are in [0, 1]).
    test_fraction : float
        Fraction of examples held out as the test set, in (0, 1).

    Returns
    -------
    Dataset
        float32 inputs in [0, 1], int64 labels.
    """
    if num_classes < 2:
        raise ConfigError(f"synthetic: num_classes must be >= 2, got {num_classes}")
    if not input_shape or any(d < 1 for d in input_shape):
        raise ConfigError(f"synthetic: input_shape must be a non-empty tuple of positive ints, got {input_shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"synthetic: test_fraction must lie in (0, 1), got {test_fraction}")
    if noise < 0 or not math.isfinite(noise):
        raise ConfigError(f"synthetic: noise must be a finite value >= 0, got {noise}")
    num_test = round(num_examples * test_fraction)
    if num_test < 1 or num_examples - num_test < 1:
        least = math.ceil(1 / min(test_fraction, 1 - test_fraction))
        raise ConfigError(
            f"synthetic: num_examples={num_examples} leaves an empty train or test split "
            f"at test_fraction={test_fraction}; expected at least {least} examples"
        )
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0.0, 1.0, size=(num_classes, *input_shape))
    labels = rng.permutation(np.arange(num_examples, dtype=np.int64) % num_classes)
    x = templates[labels] + rng.normal(0.0, noise, size=(num_examples, *input_shape))
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    info = DatasetInfo(
        name="synthetic",
        input_shape=tuple(int(d) for d in input_shape),
        num_classes=num_classes,
        task="classification",
        source=f"generated (templates + N(0, {noise:g}^2) noise, seed={seed})",
        class_names=tuple(str(c) for c in range(num_classes)),
    )
    cut = num_examples - num_test
    return Dataset(x_train=x[:cut], y_train=labels[:cut], x_test=x[cut:], y_test=labels[cut:], info=info)
