"""`tf.distribute` strategies and mixed precision for central training.

GPU code paths are exercised on CPU by splitting the host CPU into logical devices
(:func:`split_cpu`), which must happen before TensorFlow initializes its runtime.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from fedmodel.central.config import Precision, StrategyName
from fedmodel.errors import ConfigError


def split_cpu(count: int) -> list[str]:
    """Split the first physical CPU into ``count`` logical devices; returns their names.

    Idempotent when the split already matches. Raises ``ConfigError`` when the runtime is already
    initialized with a different layout (TensorFlow allows the split only before first use).
    """
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is None or len(current) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError as err:
            raise ConfigError(
                f"cannot split the CPU into {count} logical devices after TensorFlow started ({err}); "
                "start a new process"
            ) from err
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(name: StrategyName, *, logical_devices: int = 2) -> tf.distribute.Strategy:
    """The strategy called ``name``.

    ``mirrored`` mirrors over all local GPUs, or over ``logical_devices`` logical CPU devices when there
    is no GPU. ``multi-worker`` reads its cluster from the ``TF_CONFIG`` environment variable.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] if gpus else split_cpu(logical_devices)
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ConfigError("strategy multi-worker needs the TF_CONFIG environment variable; it is not set")
        try:
            cluster = json.loads(raw)
            cluster["cluster"]["worker"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"TF_CONFIG must be JSON with cluster.worker and task; got {raw!r}") from err
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}")


def resolve_precision(precision: Precision) -> str:
    """The Keras policy name for ``precision``: ``auto`` is mixed_float16 on GPU, float32 on CPU."""
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


def apply_precision(policy: str) -> None:
    """Set the global Keras dtype policy (before building the model)."""
    tf.keras.mixed_precision.set_global_policy(policy)


def float32_outputs(model: tf.keras.Model) -> tf.keras.Model:
    """Wrap ``model`` so its outputs are float32, keeping the loss and metrics in full precision."""
    if model.output.dtype == tf.float32:
        return model
    outputs = tf.keras.layers.Activation("linear", dtype="float32", name="float32_logits")(model.output)
    return tf.keras.Model(model.inputs, outputs, name=model.name)
