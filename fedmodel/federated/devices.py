"""Which device a client process trains on: its local GPU when it has one, its CPU otherwise.

A SuperNode's ClientApp calls :func:`configure_devices` once per process, before TensorFlow places
anything. ``node_config["device"]`` (``flower-supernode --node-config 'device="cpu"'``) pins it:

- ``"auto"`` (default): the first GPU if there is one (memory growth on, so several processes can share
  it), else the CPU; one process uses one GPU;
- ``"cpu"``: hide every GPU;
- ``"gpu:N"``: GPU ``N`` only (an error if this host has no such GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedmodel.errors import ConfigError

_configured: str | None = None


def parse_device(value: object) -> str:
    """``auto``, ``cpu`` or ``gpu:N``; anything else is a ConfigError."""
    text = str(value).strip().lower()
    if text in ("auto", "cpu") or (text.startswith("gpu:") and text[4:].isdigit()):
        return text
    raise ConfigError(f'node_config device must be "auto", "cpu" or "gpu:N", got {value!r}')


def configure_devices(node_config: Mapping[str, Any], *, tf: Any = None) -> str:
    """Apply ``node_config["device"]`` once per process; returns what the process trains on (``"cpu"``, ``"gpu:0"``)."""
    global _configured
    wanted = parse_device(node_config.get("device", "auto"))
    if _configured is not None:
        return _configured
    if tf is None:
        import tensorflow

        tf = tensorflow
    gpus = tf.config.list_physical_devices("GPU")
    if wanted == "cpu" or (wanted == "auto" and not gpus):
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        _configured = "cpu"
        return _configured
    index = 0 if wanted == "auto" else int(wanted[4:])
    if index >= len(gpus):
        raise ConfigError(f"node_config device {wanted!r}: this host has {len(gpus)} GPU(s)")
    tf.config.set_visible_devices([gpus[index]], "GPU")
    tf.config.experimental.set_memory_growth(gpus[index], True)
    _configured = f"gpu:{index}"
    return _configured
