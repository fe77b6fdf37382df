"""The fedmodel model zoo: one file per model, a registry, and analytic parameter counts.

>>> from fedmodel.zoo import available_models, build_model, count_params
>>> count_params("cnn", input_shape=(28, 28, 1), num_classes=10)
26010

Every model outputs **logits** (no final softmax): compile with
``tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)``. Classification models output
``(batch, num_classes)``; next-token models (``task == "next-token"``) output
``(batch, sequence_length, num_classes)`` with ``num_classes`` the vocabulary size.

No model uses BatchNormalization, which mixes the examples of a batch and so breaks per-example
DP-SGD gradients; ResNet-20 uses GroupNormalization and the Transformer LayerNormalization.

Importing this package, :func:`available_models`, :func:`get_spec`, :func:`count_params` and
:func:`~fedmodel.zoo.registry.describe_models` do not import TensorFlow; :func:`build_model` does.
"""

from __future__ import annotations

from fedmodel.zoo.registry import available_models, build_model, count_params, describe_models, get_spec
from fedmodel.zoo.spec import InputKind, ModelSpec, Task

__all__ = [
    "InputKind",
    "ModelSpec",
    "Task",
    "available_models",
    "build_model",
    "count_params",
    "describe_models",
    "get_spec",
]
