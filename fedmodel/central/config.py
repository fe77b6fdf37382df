"""The configuration of a central training run, validated once at the edge.

A :class:`TrainConfig` is frozen: the CLI (or a caller) builds it, it checks itself in
``__post_init__``, and the trainer only reads it. Every error names the bad value and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, get_args

from fedmodel.errors import ConfigError
from fedmodel.privacy.config import PrivacyConfig

Optimizer = Literal["sgd", "momentum", "adam", "rmsprop"]
Schedule = Literal["constant", "cosine", "exponential", "step"]
StrategyName = Literal["default", "one-device", "mirrored", "multi-worker"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16", "auto"]

OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
STRATEGIES: tuple[str, ...] = get_args(StrategyName)
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(field: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field} must be a positive number, got {value!r}")


def _non_negative(field: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{field} must be a number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a central training run needs.

    Attributes
    ----------
    model, dataset:
        Names from the zoo registry and the data registry (``fedmodel zoo``, ``fedmodel datasets``).
    data_path:
        A user file for ``npz``/``text``/``shakespeare`` datasets, or a local copy of a Keras dataset.
    hparams:
        Model hyperparameters passed to the zoo builder (validated there).
    epochs, batch_size:
        ``batch_size`` is the *global* batch: under a multi-replica strategy each replica gets
        ``batch_size / num_replicas`` examples.
    optimizer, learning_rate, momentum:
        ``momentum`` is used by ``momentum`` (SGD with momentum) and ``rmsprop``.
    l1, l2:
        Weight regularization coefficients added to the loss for every kernel.
    schedule, decay_rate, decay_steps_epochs:
        ``cosine`` decays to 0 over the run, ``exponential`` multiplies by ``decay_rate`` every
        ``decay_steps_epochs`` epochs (smoothly), ``step`` does the same in steps.
    early_stopping:
        Patience in epochs on validation loss; 0 disables early stopping.
    validation_fraction:
        Share of the training set held out for validation (early stopping, checkpoints).
    strategy, logical_devices:
        ``mirrored`` uses every local GPU, or, without GPUs, ``logical_devices`` logical CPU devices.
        ``multi-worker`` reads the cluster from ``TF_CONFIG``.
    privacy:
        Example-level DP-SGD settings; ``None`` trains without differential privacy.
    dp_outputs_only:
        With DP-SGD: write and print only what the privacy ledger covers (the final model, the ledger,
        epsilon per epoch, test-set metrics). No training or validation loss/accuracy/clipped fraction
        (they are computed on private examples without noise), no TensorBoard logs, no checkpoint picked
        by an un-noised loss, no ``diagnostics.json``.
    audit_canaries:
        One-run privacy audit (:mod:`fedmodel.audit`): this many canary examples, each secretly included with
        probability 1/2, join the training set; the final model is scored on them and ``audit.json`` gets
        an epsilon lower bound. 0 = no audit.
    audit_keep_model:
        With an audit, keep ``model.keras`` (the model trained with canaries); ``False`` deletes it and the
        checkpoints when the audit is written (the run only measures).
    precision:
        ``auto`` picks ``mixed_float16`` on GPU and ``float32`` on CPU; ``mixed_bfloat16`` is the CPU mixed
        mode. The loss and metrics are always computed in float32.
    """

    model: str
    dataset: str
    data_path: str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 32
    optimizer: Optimizer = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    l1: float = 0.0
    l2: float = 0.0
    schedule: Schedule = "constant"
    decay_rate: float = 0.5
    decay_steps_epochs: float = 10.0
    early_stopping: int = 0
    validation_fraction: float = 0.1
    strategy: StrategyName = "default"
    logical_devices: int = 2
    precision: Precision = "float32"
    seed: int = 0
    max_examples: int | None = None
    seq_len: int = 80
    download: bool = False
    tensorboard: bool = True
    checkpoints: bool = True
    privacy: PrivacyConfig | None = None
    dp_outputs_only: bool = False
    audit_canaries: int = 0
    audit_keep_model: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty name, got {value!r}")
        for name in ("epochs", "batch_size", "logical_devices", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.early_stopping, int) or self.early_stopping < 0:
            raise ConfigError(f"early_stopping must be an integer >= 0 (epochs), got {self.early_stopping!r}")
        if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise ConfigError(f"max_examples must be an integer >= 1 or None, got {self.max_examples!r}")
        _positive("learning_rate", self.learning_rate)
        _positive("decay_steps_epochs", self.decay_steps_epochs)
        _non_negative("l1", self.l1)
        _non_negative("l2", self.l2)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.decay_rate <= 1:
            raise ConfigError(f"decay_rate must be in (0, 1], got {self.decay_rate!r}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not isinstance(self.dp_outputs_only, bool):
            raise ConfigError(f"dp_outputs_only must be True or False, got {self.dp_outputs_only!r}")
        if self.dp_outputs_only and self.privacy is None:
            raise ConfigError("dp_outputs_only needs DP-SGD (a noise multiplier or a target epsilon); got no privacy")
        if self.dp_outputs_only and self.early_stopping:
            raise ConfigError(
                "early_stopping selects on validation loss computed without noise, which dp_outputs_only excludes; "
                f"got early_stopping={self.early_stopping}"
            )
        if self.early_stopping and self.validation_fraction == 0:
            raise ConfigError("early_stopping needs a validation set; got validation_fraction 0")
        if isinstance(self.audit_canaries, bool) or not isinstance(self.audit_canaries, int) or self.audit_canaries < 0:
            raise ConfigError(f"audit_canaries must be an integer >= 0, got {self.audit_canaries!r}")
        if not isinstance(self.audit_keep_model, bool):
            raise ConfigError(f"audit_keep_model must be True or False, got {self.audit_keep_model!r}")
        if self.audit_canaries and self.strategy == "multi-worker":
            raise ConfigError(
                "audit_canaries needs a single-process strategy (each multi-worker process would draw its own "
                "secret canaries); got strategy multi-worker"
            )
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        object.__setattr__(self, "hparams", MappingProxyType(dict(self.hparams)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict` (a saved config, e.g. to resume a run); validated as usual."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"saved training config has unknown fields: {', '.join(unknown)}")
        values = dict(data)
        if values.get("privacy") is not None:
            values["privacy"] = PrivacyConfig(**values["privacy"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (for ``run.json``)."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        out["hparams"] = dict(self.hparams)
        out["privacy"] = dataclasses.asdict(self.privacy) if self.privacy else None
        return out
