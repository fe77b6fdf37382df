"""Which layers the fast engine taps, and the forward pass that exposes what the taps need.

:func:`model_taps` finds a :class:`~fedmodel.privacy.engine.per_example.LayerTap` for every trainable layer of a
model (or says which it cannot); :class:`TappedForward` runs the model once and returns its logits with
each tapped layer's input and the tensor whose gradient the tap reads. A functional model with no
replaced calls runs as one Keras model with extra outputs; a model with an LSTM runs layer by layer, which
needs it to be a chain (each layer feeding only the next).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from fedmodel.privacy.engine import per_example
from fedmodel.privacy.engine.per_example import LayerTap
from fedmodel.privacy.engine.recurrent import lstm_tap


def tap_for(layer: tf.keras.layers.Layer) -> LayerTap | None:
    """The tap for ``layer``, or ``None`` when its per-example gradients need the generic engine."""
    if len(layer._inbound_nodes) != 1:
        return None
    kind = type(layer)
    if kind is tf.keras.layers.Dense:
        return per_example.dense_tap(layer)
    if kind is tf.keras.layers.Conv2D:
        return per_example.conv_tap(layer)
    if kind is tf.keras.layers.Embedding:
        return per_example.embedding_tap(layer)
    if kind is tf.keras.layers.LayerNormalization:
        return per_example.layer_norm_tap(layer)
    if kind is tf.keras.layers.GroupNormalization:
        return per_example.group_norm_tap(layer)
    if kind is tf.keras.layers.LSTM:
        return lstm_tap(layer)
    if kind.__name__ == "TokenAndPositionEmbedding" and kind.__module__.startswith("fedmodel."):
        return per_example.token_position_tap(layer)
    return None


def chain_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer] | None:
    """The layers of ``model`` in order if each takes exactly the previous one's output, else ``None``."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    previous = model.inputs[0]
    layers = [layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    for layer in layers:
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            return None
        previous = layer.output
    return layers if previous is model.outputs[0] else None


def _trainable_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    return [layer for layer in model.layers if layer.trainable_weights]


def unsupported_layers(model: tf.keras.Model) -> Sequence[str]:
    """Why the fast engine cannot run ``model``: one entry per trainable layer it cannot tap."""
    reasons = []
    needs_chain = []
    for layer in _trainable_layers(model):
        tap = tap_for(layer) if not isinstance(layer, tf.keras.Model) else None
        if tap is None:
            reasons.append(f"{layer.name} ({type(layer).__name__})")
        elif tap.forward is not None:
            needs_chain.append(layer)
    if needs_chain and chain_layers(model) is None:
        reasons += [f"{layer.name} ({type(layer).__name__}, in a model that is not a chain)" for layer in needs_chain]
    return reasons


def model_taps(model: tf.keras.Model) -> list[LayerTap] | None:
    """Taps for every trainable layer, in ``model.layers`` order, or ``None`` if any is unsupported."""
    if unsupported_layers(model):
        return None
    taps = [tap_for(layer) for layer in _trainable_layers(model)]
    return [tap for tap in taps if tap is not None]


Forward = tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]


class TappedForward:
    """``forward(x) -> (logits, inputs, tapped)``: one training-mode pass that exposes every tap's tensors."""

    def __init__(self, model: tf.keras.Model, taps: Sequence[LayerTap]) -> None:
        self.taps = list(taps)
        self._chain: list[tf.keras.layers.Layer] | None = None
        self._tap_model: tf.keras.Model | None = None
        if any(tap.forward is not None for tap in self.taps):
            self._chain = chain_layers(model)
            if self._chain is None:
                raise ValueError(f"model {model.name!r} has a replaced layer call but is not a chain")
            self._by_layer = {id(tap.layer): tap for tap in self.taps}
        else:
            tapped = [tap.layer for tap in self.taps]
            self._tap_model = tf.keras.Model(
                model.inputs, [model.output, *[layer.input for layer in tapped], *[layer.output for layer in tapped]]
            )

    def __call__(self, x: tf.Tensor) -> Forward:
        if self._tap_model is not None:
            k = len(self.taps)
            outs = self._tap_model(x, training=True)
            return outs[0], list(outs[1 : 1 + k]), list(outs[1 + k :])
        assert self._chain is not None
        inputs: list[tf.Tensor] = []
        tapped: list[tf.Tensor] = []
        h = x
        for layer in self._chain:
            tap = self._by_layer.get(id(layer))
            if tap is not None and tap.forward is not None:
                h, watched, prepared_input = tap.forward(h)
                inputs.append(prepared_input)
                tapped.append(watched)
                continue
            out = layer(h, training=True)
            if tap is not None:
                inputs.append(h)
                tapped.append(out)
            h = out
        return h, inputs, tapped
