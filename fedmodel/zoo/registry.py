"""The registry of zoo models, looked up by name; TensorFlow-free except inside :func:`build_model`.

To add a model, write ``fedmodel/zoo/<name>.py`` with a ``SPEC`` and append it to ``_SPECS``; the
conformance test in ``tests/zoo`` then covers it automatically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from fedmodel.errors import ConfigError
from fedmodel.zoo import cnn, lenet, logreg, lstm, mlp, resnet20, transformer
from fedmodel.zoo.spec import ModelSpec

if TYPE_CHECKING:
    import tensorflow as tf

_SPECS: tuple[ModelSpec[Any], ...] = (
    logreg.SPEC,
    mlp.SPEC,
    cnn.SPEC,
    lenet.SPEC,
    resnet20.SPEC,
    lstm.SPEC,
    transformer.SPEC,
)
if len({spec.name for spec in _SPECS}) != len(_SPECS):
    raise RuntimeError(f"duplicate model names in the zoo: {[spec.name for spec in _SPECS]}")

_REGISTRY: Mapping[str, ModelSpec[Any]] = MappingProxyType({spec.name: spec for spec in _SPECS})


def available_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec[Any]:
    """The spec of model ``name``; an unknown name raises ConfigError listing the available ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None


def build_model(
    name: str, *, input_shape: Sequence[int], num_classes: int, seed: int | None = None, **hparams: Any
) -> tf.keras.Model:
    """Build zoo model ``name`` as an uncompiled ``tf.keras.Model`` that outputs logits.

    Parameters
    ----------
    name
        A name from :func:`available_models`.
    input_shape
        Shape of one example, without the batch axis, e.g. ``(28, 28, 1)`` or ``(80,)``.
    num_classes
        Number of classes (>= 2); for next-token models, the vocabulary size.
    seed
        With a seed, the initial weights are deterministic (applied through
        ``tf.keras.utils.set_random_seed``, which also reseeds Python's and NumPy's global generators).
    **hparams
        Overrides of the model's ``default_hparams``.

    Raises
    ------
    ConfigError
        For an unknown name or hyperparameter, or a shape, class count or value the model can't take.
    """
    return get_spec(name).build(input_shape=input_shape, num_classes=num_classes, seed=seed, **hparams)


def count_params(name: str, *, input_shape: Sequence[int], num_classes: int, **hparams: Any) -> int:
    """Number of weights of ``build_model(name, ...)``, computed analytically without TensorFlow.

    Takes the same arguments (minus ``seed``) and raises the same errors as :func:`build_model`.
    """
    return get_spec(name).count_params(input_shape=input_shape, num_classes=num_classes, **hparams)


def _describe_input(spec: ModelSpec[Any]) -> str:
    shape = spec.default_input_shape
    if spec.input_kind == "tokens":
        return f"{shape[0]} tokens"
    if spec.input_kind == "vector":
        return f"{math.prod(shape)}-d vector"
    return f"{'x'.join(map(str, shape))} image"


def describe_models() -> list[dict[str, object]]:
    """One row per model (sorted by name) for ``fedmodel zoo``: its defaults and analytic parameter count.

    Keys: ``name``, ``task``, ``input`` (e.g. ``"28x28x1 image"``, ``"80 tokens"``), ``num_classes``,
    ``params`` and ``description``.
    """
    rows: list[dict[str, object]] = []
    for name in available_models():
        spec = _REGISTRY[name]
        params = spec.count_params(input_shape=spec.default_input_shape, num_classes=spec.default_num_classes)
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "input": _describe_input(spec),
                "num_classes": spec.default_num_classes,
                "params": params,
                "description": spec.description,
            }
        )
    return rows
