"""DP-SGD engine: clipping bounds, clipped sums against brute force, hand computation, reference.

Tolerances: per-example norms and clipped sums agree with a per-example loop to float32 round-off
(relative 1e-4). The noise itself is tested in ``test_dpsgd_noise.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmodel import zoo
from fedmodel.privacy.engine.dpsgd import ClippedSum, DPSGDConfig, DPSGDModel, per_example_loss
from fedmodel.privacy.mechanism import GaussianMechanism

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def no_noise(clip: float) -> GaussianMechanism:
    return GaussianMechanism(noise_multiplier=0.0, clip=clip)


CASES = {  # model -> (input shape, classes) small enough for a per-example loop
    "logreg": ((8, 8, 1), 10),
    "mlp": ((8, 8, 1), 10),
    "cnn": ((28, 28, 1), 10),
    "lenet": ((16, 16, 1), 10),
    "resnet20": ((8, 8, 3), 4),
    "transformer": ((12,), 20),
    "lstm": ((6,), 12),
}


def data(shape: tuple[int, ...], classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if len(shape) == 1:
        return rng.integers(0, classes, (n, *shape)).astype(np.int32), rng.integers(0, classes, (n, *shape))
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def brute_force(
    model: tf.keras.Model, x: np.ndarray, y: np.ndarray, clip: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """One tape per example: the definition of per-example clipping."""
    loss_fn = per_example_loss(LOSS)
    sums = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    norms = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(y[i : i + 1], model(x[i : i + 1], training=True)))
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]
        norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        norms.append(norm)
        for s, g in zip(sums, grads, strict=True):
            s += g * min(1.0, clip / norm)
    return sums, np.array(norms)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("engine", ["auto", "vectorized"])
def test_clipped_sum_matches_a_per_example_loop(name: str, engine: str) -> None:
    shape, classes = CASES[name]
    hparams = {"units": 16} if name == "lstm" else {"d_model": 16, "heads": 2} if name == "transformer" else {}
    model = zoo.build_model(name, input_shape=shape, num_classes=classes, seed=1, **hparams)
    x, y = data(shape, classes, n=6)
    clip = 0.5
    engine_ = ClippedSum(model, per_example_loss(LOSS), clip=clip, engine=engine)  # type: ignore[arg-type]
    sums, norms, _, _ = engine_(tf.constant(x), tf.constant(y), tf.ones(6))
    want_sums, want_norms = brute_force(model, x, y, clip)
    np.testing.assert_allclose(norms.numpy(), want_norms, rtol=1e-4)
    assert (want_norms > clip).any()  # the clip is active for some examples
    for got, want in zip(sums, want_sums, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    if engine == "auto":
        expected = "vectorized" if name == "transformer" else "fast"
        assert engine_.engine == expected


@settings(max_examples=20, deadline=None)
@given(
    scale=st.floats(1e-3, 1e3),
    clip=st.floats(1e-2, 10.0),
    seed=st.integers(0, 2**16),
)
def test_every_example_contribution_is_within_the_clip_norm(scale: float, clip: float, seed: int) -> None:
    # A batch of one: the clipped sum is that example's clipped gradient.
    model = _cnn()
    x, y = data((28, 28, 1), 10, n=1, seed=seed)
    sums, norms, _, _ = _cnn_engine(clip)(tf.constant(x * scale), tf.constant(y), tf.ones(1))
    total = np.sqrt(sum(float(np.sum(s.numpy().astype(np.float64) ** 2)) for s in sums))
    assert total <= clip * (1 + 1e-5)
    if norms.numpy()[0] <= clip:  # unclipped examples pass through unchanged
        assert total == pytest.approx(float(norms.numpy()[0]), rel=1e-4)
    del model


_MODEL: list[tf.keras.Model] = []
_ENGINES: dict[float, ClippedSum] = {}


def _cnn() -> tf.keras.Model:
    if not _MODEL:
        _MODEL.append(zoo.build_model("cnn", input_shape=(28, 28, 1), num_classes=10, seed=0))
    return _MODEL[0]


def _cnn_engine(clip: float) -> ClippedSum:
    return ClippedSum(_cnn(), per_example_loss(LOSS), clip=clip, engine="fast")


def test_masked_examples_contribute_nothing() -> None:
    engine = _cnn_engine(1.0)
    x, y = data((28, 28, 1), 10, n=4)
    masked, _, _, _ = engine(tf.constant(x), tf.constant(y), tf.constant([1.0, 1.0, 0.0, 0.0]))
    first_two, _, _, _ = engine(tf.constant(x[:2]), tf.constant(y[:2]), tf.ones(2))
    for a, b in zip(masked, first_two, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_a_no_noise_step_equals_a_hand_computation() -> None:
    # Logistic regression, 2 features, 2 classes, zero weights: logits 0, softmax (1/2, 1/2).
    # Per-example kernel gradient = x (p - onehot(y))^T, bias gradient = p - onehot(y).
    #   example 1: x=(3, 4), y=0 -> p-onehot = (-1/2, 1/2): kernel [[-1.5, 1.5], [-2, 2]], bias [-.5, .5]
    #              norm = sqrt(1.5^2*2 + 2^2*2 + .5^2*2) = sqrt(13) = 3.6056 -> scaled by 1/sqrt(13)
    #   example 2: x=(0.1, 0), y=1 -> p-onehot = (1/2, -1/2): kernel [[.05, -.05], [0, 0]], bias [.5, -.5]
    #              norm = sqrt(.05^2*2 + .5^2*2) = 0.7106 < 1: unchanged
    # Update with lr 1, expected batch 2: w = -(sum of clipped) / 2.
    inputs = tf.keras.Input((2,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, kernel_initializer="zeros")(inputs))
    wrapped = DPSGDModel(model, mechanism=no_noise(1.0), dp=DPSGDConfig(expected_batch_size=2.0))
    wrapped.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=LOSS)
    wrapped.fit(np.array([[3.0, 4.0], [0.1, 0.0]], np.float32), np.array([0, 1]), batch_size=2, epochs=1, verbose=0)
    s = 1 / np.sqrt(13)
    kernel = -(np.array([[-1.5, 1.5], [-2.0, 2.0]]) * s + np.array([[0.05, -0.05], [0.0, 0.0]])) / 2
    bias = -(np.array([-0.5, 0.5]) * s + np.array([0.5, -0.5])) / 2
    np.testing.assert_allclose(model.layers[1].kernel.numpy(), kernel, rtol=1e-5)
    np.testing.assert_allclose(model.layers[1].bias.numpy(), bias, rtol=1e-5, atol=1e-7)


def test_no_noise_update_equals_tensorflow_privacy_reference() -> None:
    # Same initial weights, same batch, noise 0: our step and DPKerasSGDOptimizer's (one microbatch per
    # example) give the same weights to float32 round-off (atol 1e-6).
    import tensorflow_privacy as tfp

    x, y = data((28, 28, 1), 10, n=32, seed=3)
    ours = zoo.build_model("cnn", input_shape=(28, 28, 1), num_classes=10, seed=5)
    ref = zoo.build_model("cnn", input_shape=(28, 28, 1), num_classes=10, seed=5)
    wrapped = DPSGDModel(ours, mechanism=no_noise(0.8), dp=DPSGDConfig(expected_batch_size=32.0))
    wrapped.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss=LOSS)
    ref.compile(
        optimizer=tfp.DPKerasSGDOptimizer(
            l2_norm_clip=0.8, noise_multiplier=0.0, num_microbatches=32, learning_rate=0.5
        ),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
    )
    wrapped.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    ref.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.get_weights(), _initial_cnn(5), strict=True))
    assert moved > 1e-3  # the step did something
    for a, b in zip(ours.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _initial_cnn(seed: int) -> list[np.ndarray]:
    return zoo.build_model("cnn", input_shape=(28, 28, 1), num_classes=10, seed=seed).get_weights()


def test_fast_engine_refuses_layers_it_cannot_handle() -> None:
    from fedmodel.errors import ConfigError

    model = zoo.build_model("lstm", input_shape=(6,), num_classes=12, seed=0, units=8)
    dropout = tf.keras.Sequential(
        [tf.keras.Input((6, 3)), tf.keras.layers.LSTM(4, dropout=0.1), tf.keras.layers.Dense(2)]
    )
    with pytest.raises(ConfigError, match=r"lstm_\d* \(LSTM\)"):
        ClippedSum(dropout, per_example_loss(LOSS), clip=1.0, engine="fast")
    assert ClippedSum(model, per_example_loss(LOSS), clip=1.0, engine="fast").engine == "fast"
