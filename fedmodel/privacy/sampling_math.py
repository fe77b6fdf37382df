"""Step counting conventions shared by plans, budgets and trainers (no TensorFlow)."""

from __future__ import annotations

import math


def dp_steps(*, examples: int, batch_size: int, epochs: int) -> int:
    """Planned noisy steps: ``ceil(epochs * examples / batch_size)``, as ``fedmodel budget`` counts them."""
    return math.ceil(epochs * examples / batch_size)
