"""What the zoo knows about one model: :class:`ModelSpec`.

A spec bundles a model's metadata (task, input kind, defaults), its frozen hyperparameter dataclass, a
builder and an analytic parameter counter. All validation of user input happens here, before any
TensorFlow code runs, so a bad call fails fast with a :class:`~fedmodel.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, get_args

from fedmodel.errors import ConfigError
from fedmodel.zoo import checks

if TYPE_CHECKING:
    import tensorflow as tf
    from _typeshed import DataclassInstance

Task = Literal["classification", "next-token"]
InputKind = Literal["image", "vector", "tokens"]
Shape = tuple[int, ...]

H = TypeVar("H", bound="DataclassInstance")

_RANKS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {"image": (3, "(height, width, channels)"), "tokens": (1, "(sequence_length,)")}
)


def _no_extra_check(shape: Shape) -> None:
    """Accept every shape that passed the input-kind check."""


@dataclass(frozen=True)
class ModelSpec(Generic[H]):
    """One zoo model.

    Attributes
    ----------
    name
        Registry name, e.g. ``"cnn"``.
    task
        ``"classification"``: output ``(batch, num_classes)`` logits; ``"next-token"``: output
        ``(batch, sequence_length, num_classes)`` logits, ``num_classes`` being the vocabulary size.
    input_kind
        ``"image"`` (rank-3 ``(height, width, channels)`` floats), ``"vector"`` (any rank, flattened)
        or ``"tokens"`` (rank-1 ``(sequence_length,)`` int ids).
    description
        One line for ``fedmodel zoo``.
    default_input_shape, default_num_classes
        What the model was designed for, e.g. ``(28, 28, 1)`` and 10 for MNIST.
    hparams_type
        Frozen dataclass of the hyperparameters; its field defaults are the defaults and its
        ``__post_init__`` validates values with :class:`~fedmodel.errors.ConfigError`.
    builder
        ``builder(input_shape, num_classes, hparams) -> tf.keras.Model`` (uncompiled, logits out). It
        imports TensorFlow itself and is called only with validated arguments.
    param_counter
        ``param_counter(input_shape, num_classes, hparams) -> int``, analytic, TensorFlow-free.
    shape_check
        Model-specific input-shape constraint beyond the input kind's rank, raising ConfigError.
    """

    name: str
    task: Task
    input_kind: InputKind
    description: str
    default_input_shape: Shape
    default_num_classes: int
    hparams_type: type[H]
    builder: Callable[[Shape, int, H], tf.keras.Model]
    param_counter: Callable[[Shape, int, H], int]
    shape_check: Callable[[Shape], None] = _no_extra_check

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"model name must be a Python identifier, got {self.name!r}")
        if self.task not in get_args(Task):
            raise ValueError(f"task must be one of {get_args(Task)}, got {self.task!r}")
        if self.input_kind not in get_args(InputKind):
            raise ValueError(f"input_kind must be one of {get_args(InputKind)}, got {self.input_kind!r}")
        if not self.description or "\n" in self.description:
            raise ValueError(f"description must be one non-empty line, got {self.description!r}")
        if not dataclasses.is_dataclass(self.hparams_type):
            raise ValueError(f"hparams_type must be a dataclass, got {self.hparams_type!r}")
        self.validate_input_shape(self.default_input_shape)
        self.validate_num_classes(self.default_num_classes)

    @property
    def default_hparams(self) -> Mapping[str, object]:
        """The default hyperparameters, read-only."""
        defaults = self.hparams_type()
        return MappingProxyType({f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)})

    def validate_input_shape(self, shape: Sequence[int]) -> Shape:
        """Return ``shape`` (one example, no batch axis) as a tuple, or raise ConfigError if unusable."""
        if isinstance(shape, str | bytes) or not isinstance(shape, Sequence) or len(shape) == 0:
            raise ConfigError(f"{self.name}: input_shape must be a non-empty tuple of ints, got {shape!r}")
        if not all(checks.is_int(d) and int(d) >= 1 for d in shape):
            raise ConfigError(f"{self.name}: input_shape must contain positive ints, got {shape!r}")
        result = tuple(int(d) for d in shape)
        if self.input_kind in _RANKS:
            rank, layout = _RANKS[self.input_kind]
            if len(result) != rank:
                raise ConfigError(
                    f"{self.name}: expected a rank-{rank} {self.input_kind} shape {layout}, got {result!r}"
                )
        self.shape_check(result)
        return result

    def validate_num_classes(self, num_classes: int) -> int:
        """Return ``num_classes`` if it is an int >= 2 (for next-token models: the vocabulary size)."""
        if not checks.is_int(num_classes) or num_classes < 2:
            raise ConfigError(f"{self.name}: num_classes must be an int >= 2, got {num_classes!r}")
        return int(num_classes)

    def make_hparams(self, overrides: Mapping[str, object]) -> H:
        """The defaults updated with ``overrides``; unknown names or bad values raise ConfigError."""
        accepted = [f.name for f in dataclasses.fields(self.hparams_type)]
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown hyperparameter(s) {unknown}; accepted: {sorted(accepted) or 'none'}"
            )
        try:
            return self.hparams_type(**overrides)
        except ConfigError as err:
            raise ConfigError(f"{self.name}: {err}") from err

    def count_params(self, *, input_shape: Sequence[int], num_classes: int, **hparams: Any) -> int:
        """Number of weights of the model, computed analytically (no TensorFlow)."""
        shape = self.validate_input_shape(input_shape)
        classes = self.validate_num_classes(num_classes)
        return self.param_counter(shape, classes, self.make_hparams(hparams))

    def build(
        self, *, input_shape: Sequence[int], num_classes: int, seed: int | None = None, **hparams: Any
    ) -> tf.keras.Model:
        """Build the uncompiled Keras model; with ``seed``, the initial weights are deterministic.

        A seed is applied with ``tf.keras.utils.set_random_seed``, which also reseeds Python's
        ``random`` and NumPy's global generators. Nothing that protects privacy draws from those
        (:mod:`fedmodel.privacy.randomness`). Under a 16-bit dtype policy, GroupNormalization layers
        are built in float32 (:func:`float32_group_norm`).
        """
        shape = self.validate_input_shape(input_shape)
        classes = self.validate_num_classes(num_classes)
        hp = self.make_hparams(hparams)
        if seed is not None and (not checks.is_int(seed) or seed < 0):
            raise ConfigError(f"{self.name}: seed must be None or an int >= 0, got {seed!r}")
        import tensorflow as tf

        if seed is not None:
            tf.keras.utils.set_random_seed(seed)
        return float32_group_norm(self.builder(shape, classes, hp))


def float32_group_norm(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` with its top-level GroupNormalization layers computing in float32 (same weights).

    Keras' GroupNormalization computes its mean and variance in its compute dtype. In bfloat16 that
    rounding changes with the rest of the batch, so one example's output depends on the others: DP-SGD's
    per-example bound then fails (:func:`fedmodel.privacy.engine.dpsgd.check_precision` refuses such layers),
    and the statistics lose precision anyway (as Keras' LayerNormalization, which casts to float32).
    A model without a 16-bit GroupNormalization is returned as it is.
    """
    import tensorflow as tf

    def sixteen_bit_norm(layer: tf.keras.layers.Layer) -> bool:
        return isinstance(layer, tf.keras.layers.GroupNormalization) and layer.compute_dtype in ("float16", "bfloat16")

    if not any(sixteen_bit_norm(layer) for layer in model.layers):
        return model

    def clone(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
        config = layer.get_config()
        if sixteen_bit_norm(layer):
            config["dtype"] = "float32"
        return type(layer).from_config(config)

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
