"""Conformance test run on every registered zoo model (a new model is covered by registering it).

Each model is checked at its defaults and at a small second input: output shape, analytic parameter
count against Keras, config round-trip, no BatchNorm, causality of next-token models, seeded
initialization, and that a few Adam steps on tiny learnable data clearly lower the loss.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.zoo import ModelSpec, available_models, build_model, count_params, get_spec

# A second, small configuration per input kind: images 8x8x1 (the sklearn digits; exercises the
# small-input paths of cnn and lenet), flat 64-d vectors, short sequences over a small vocabulary.
SMALL: dict[str, tuple[tuple[int, ...], int]] = {
    "image": ((8, 8, 1), 5),
    "vector": ((64,), 5),
    "tokens": ((20,), 30),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained in the loss test: full-batch Adam steps on ``examples`` tiny examples."""

    lr: float = 1e-2
    examples: int = 32
    steps: int = 12
    hparams: dict[str, object] = dataclasses.field(default_factory=dict)


# Kept small so that the whole zoo suite stays fast on 2 CPU cores: narrower LSTM and Transformer;
# the 20-layer ResNet is slow per step and diverges for a while at 1e-2, so fewer examples, lower lr.
RECIPES: dict[str, Recipe] = {
    "resnet20": Recipe(lr=3e-3, examples=8, steps=8),
    "lstm": Recipe(lr=2e-2, steps=20, hparams={"units": 32}),
    "transformer": Recipe(hparams={"d_model": 32}),
}

# Keras draws its initializer seeds with random.randint(1, 1e9) after set_random_seed.
pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")

MODELS = available_models()
CONFIGS = ["default", "small"]


def config(spec: ModelSpec, which: str) -> tuple[tuple[int, ...], int]:
    """(input_shape, num_classes) of the ``default`` or ``small`` configuration."""
    return (spec.default_input_shape, spec.default_num_classes) if which == "default" else SMALL[spec.input_kind]


@functools.cache
def built(name: str, which: str) -> tf.keras.Model:
    """The model at a configuration, built once with seed 0 (tests must not train it)."""
    shape, classes = config(get_spec(name), which)
    return build_model(name, input_shape=shape, num_classes=classes, seed=0)


def make_data(spec: ModelSpec, shape: tuple[int, ...], classes: int, *, n: int = 32) -> tuple[np.ndarray, ...]:
    """Tiny learnable data: the argmax of a fixed linear map for classifiers, ``next = token + 1`` for LMs."""
    rng = np.random.default_rng(0)
    if spec.task == "next-token":
        tokens = (rng.integers(0, classes, size=(n, 1)) + np.arange(shape[0])) % classes  # (n, time)
        return tokens.astype(np.int32), ((tokens + 1) % classes).astype(np.int32)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), classes))
    return x, np.argmax(x.reshape(n, -1) @ w, axis=1).astype(np.int32)


@pytest.mark.parametrize("which", CONFIGS)
@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_param_count(name: str, which: str) -> None:
    spec = get_spec(name)
    shape, classes = config(spec, which)
    model = built(name, which)
    x, _ = make_data(spec, shape, classes, n=3)
    expected = (3, classes) if spec.task == "classification" else (3, shape[0], classes)
    assert model(x).shape == expected
    assert count_params(name, input_shape=shape, num_classes=classes) == model.count_params()


@pytest.mark.parametrize("which", CONFIGS)
@pytest.mark.parametrize("name", MODELS)
def test_config_round_trip(name: str, which: str) -> None:
    spec = get_spec(name)
    model = built(name, which)
    clone = tf.keras.Model.from_config(model.get_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    clone.set_weights(model.get_weights())
    x, _ = make_data(spec, *config(spec, which), n=4)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_no_batch_norm(name: str) -> None:
    layers = built(name, "default").submodules
    assert any(isinstance(layer, tf.keras.layers.Dense) for layer in layers)  # the walk finds layers
    offenders = [layer.name for layer in layers if "batchnorm" in type(layer).__name__.lower()]
    assert offenders == []


@pytest.mark.parametrize("name", MODELS)
def test_weighted_layers_have_separate_activations(name: str) -> None:
    # Dense/Conv2D layers output their pre-activation z; the activation is its own layer. DP-SGD's fast
    # engine reads dL/dz from the layer output, so an activation folded into the layer would cost a recompute.
    model = built(name, "default")
    folded = [
        layer.name
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.Dense | tf.keras.layers.Conv2D)
        and layer.activation is not tf.keras.activations.linear
    ]
    assert folded == []


@pytest.mark.parametrize("name", [n for n in MODELS if get_spec(n).task == "next-token"])
def test_next_token_models_are_causal(name: str) -> None:
    spec = get_spec(name)
    model = built(name, "small")
    x, _ = make_data(spec, *config(spec, "small"), n=2)
    changed = x.copy()
    changed[:, 10] = (changed[:, 10] + 1) % SMALL["tokens"][1]
    before, after = model(x).numpy(), model(changed).numpy()
    np.testing.assert_allclose(after[:, :10], before[:, :10], rtol=1e-5, atol=1e-6)  # the past ignores it
    assert np.abs(after[:, 10:] - before[:, 10:]).max() > 1e-4  # the changed position and later see it


@pytest.mark.parametrize("name", MODELS)
def test_seed_fixes_initial_weights(name: str) -> None:
    shape, classes = config(get_spec(name), "small")
    same = build_model(name, input_shape=shape, num_classes=classes, seed=0)
    other = build_model(name, input_shape=shape, num_classes=classes, seed=1)
    reference = built(name, "small").get_weights()
    for a, b in zip(same.get_weights(), reference, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(other.get_weights(), reference, strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_a_few_steps_lower_the_loss(name: str) -> None:
    spec = get_spec(name)
    recipe = RECIPES.get(name, Recipe())
    shape, classes = config(spec, "small")
    model = build_model(name, input_shape=shape, num_classes=classes, seed=0, **recipe.hparams)
    x, y = make_data(spec, shape, classes, n=recipe.examples)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(recipe.lr),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # for a dozen steps, tracing a graph costs more than it saves
    )
    initial = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=recipe.examples, epochs=recipe.steps, shuffle=False, verbose=0)
    final = model.evaluate(x, y, verbose=0)
    assert np.isfinite(initial) and initial > 1.0  # chance level: ln(5) = 1.6 or ln(30) = 3.4
    assert final < 0.7 * initial, (initial, final)
