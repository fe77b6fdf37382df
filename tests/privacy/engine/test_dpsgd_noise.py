"""DP-SGD noise: its source (OS entropy, or an injected test generator), its size, once per step, empty steps.

Noise is checked against an independent copy of the injected generator (same seed, same draws), so most
checks are exact to float32 round-off. Statistical tolerances are stated where they are used; each is at
least 4.5 standard deviations of the statistic, so a correct implementation fails with probability below
1e-5, while the wrong scales they guard against (noise divided by the batch, noise on every replica, a
single normal draw's tails) are far outside them.
"""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from fedmodel import zoo
from fedmodel.errors import ConfigError
from fedmodel.privacy import randomness
from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel, add_noise, at_least_one_example, gaussian_noise
from fedmodel.privacy.mechanism import GaussianMechanism

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(hidden: tuple[int, ...] = (64,)) -> tf.keras.Model:
    return zoo.build_model("mlp", input_shape=(8, 8, 1), num_classes=10, seed=0, hidden=hidden)


def wrap(
    model: tf.keras.Model,
    *,
    z: float = 1.0,
    clip: float = 1.0,
    expected: float = 10.0,
    generator: tf.random.Generator | None = None,
    engine: str = "auto",
) -> DPSGDModel:
    wrapped = DPSGDModel(
        model,
        mechanism=GaussianMechanism(noise_multiplier=z, clip=clip),
        dp=DPSGDConfig(expected_batch_size=expected, engine=engine),  # type: ignore[arg-type]
        noise_generator=generator,
    )
    wrapped.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=LOSS)
    return wrapped


def masked_batch(n: int, shape: tuple[int, ...] = (8, 8, 1), classes: int = 10) -> tf.data.Dataset:
    """``n`` examples, all masked out: the clipped sum is exactly zero, the step is noise only."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    return tf.data.Dataset.from_tensors((x, rng.integers(0, classes, n), np.zeros(n, np.float32)))


def step_moves(wrapped: DPSGDModel, data: tf.data.Dataset) -> np.ndarray:
    """One SGD step (learning rate 1): how far every weight moved, flattened."""
    before = [v.numpy() for v in wrapped.model.trainable_variables]
    wrapped.fit(data, epochs=1, verbose=0)
    return np.concatenate(
        [(v.numpy() - b).ravel() for v, b in zip(wrapped.model.trainable_variables, before, strict=True)]
    )


def reference_noise(model: tf.keras.Model, *, stddev: float, seed: int, draws: int = 1) -> list[np.ndarray]:
    """What a generator seeded with ``seed`` gives in its first ``draws`` steps, by the definition:
    ``stddev * (n_1 + ... + n_k) / sqrt(k)`` for ``k = NOISE_DRAWS`` normals per value, one call per step."""
    generator = tf.random.Generator.from_seed(seed)
    total = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    k = randomness.NOISE_DRAWS
    return [stddev * generator.normal([k, total]).numpy().sum(axis=0) / np.sqrt(k) for _ in range(draws)]


def test_noise_is_the_sum_of_noise_draws_normals_from_the_generator() -> None:
    shapes = [tf.TensorShape([3, 4]), tf.TensorShape([5]), tf.TensorShape([2, 2, 2])]
    got = gaussian_noise(shapes, stddev=0.7, generator=tf.random.Generator.from_seed(9))
    draws = tf.random.Generator.from_seed(9).normal([randomness.NOISE_DRAWS, 12 + 5 + 8]).numpy()
    want = 0.7 * draws.sum(axis=0) / np.sqrt(randomness.NOISE_DRAWS)
    np.testing.assert_allclose(np.concatenate([g.numpy().ravel() for g in got]), want, rtol=1e-6)
    assert [g.shape for g in got] == shapes


def test_noise_has_the_stated_standard_deviation_and_is_gaussian() -> None:
    # 200,000 values: the sample std is within 1% of the truth (its own std is 0.16%: 6 sigma); the mean
    # within 0.01 std (4.5 sigma); the excess kurtosis of a Gaussian is 0 (std of the estimate 0.011).
    z, clip = 1.3, 0.7
    shapes = [tf.TensorShape([100_000]), tf.TensorShape([1000, 100])]
    noise = gaussian_noise(shapes, stddev=z * clip, generator=tf.random.Generator.from_seed(1234))
    values = np.concatenate([n.numpy().ravel() for n in noise]).astype(np.float64)
    assert values.size == 200_000
    assert abs(values.mean()) < 0.01 * z * clip
    assert values.std() == pytest.approx(z * clip, rel=0.01)
    standardized = values / values.std()
    assert abs(np.mean(standardized**4) - 3.0) < 0.06
    assert abs(np.corrcoef(values[:-1], values[1:])[0, 1]) < 0.01  # neighbouring values independent


def test_one_step_moves_the_weights_by_noise_of_std_z_c_over_the_expected_batch() -> None:
    # MLP with 84,234 weights; ten masked examples, expected batch 50, SGD learning rate 1: every weight
    # moves by -noise / 50. The sample std of 84k values is within 1.5% of z * C (6 sigma). Dividing by
    # the real batch (10) would give 5x, noise on two replicas sqrt(2)x.
    z, clip, expected = 1.3, 0.7, 50.0
    wrapped = wrap(mlp((256, 256)), z=z, clip=clip, expected=expected, generator=tf.random.Generator.from_seed(5))
    moves = step_moves(wrapped, masked_batch(10))
    assert moves.size > 80_000
    assert (moves * expected).std() == pytest.approx(z * clip, rel=0.015)
    (want,) = reference_noise(wrapped.model, stddev=z * clip, seed=5)
    np.testing.assert_allclose(-moves * expected, want, rtol=1e-4, atol=1e-5)


def test_a_retrace_continues_the_noise_sequence() -> None:
    """Op-seeded random ops restart with every trace; the generator's state is a variable and goes on."""
    wrapped = wrap(mlp(), z=2.0, expected=1.0, generator=tf.random.Generator.from_seed(3))
    first = -step_moves(wrapped, masked_batch(4))
    wrapped.make_train_function(force=True)  # a new trace of the train step
    traced = wrapped.train_function
    second = -step_moves(wrapped, masked_batch(4))
    assert wrapped.train_function is traced
    want_first, want_second = reference_noise(wrapped.model, stddev=2.0, seed=3, draws=2)
    np.testing.assert_allclose(first, want_first, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second, want_second, rtol=1e-4, atol=1e-5)
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.1  # not the first trace's draws again


def test_two_models_built_from_the_same_seed_draw_different_noise() -> None:
    moves = []
    for _ in range(2):
        tf.keras.utils.set_random_seed(0)  # what --seed does: it must not reach the noise
        wrapped = wrap(mlp(), z=5.0, clip=1.0, expected=1.0)
        assert wrapped.secure_noise
        moves.append(step_moves(wrapped, masked_batch(4)))
    assert np.std(moves[0]) == pytest.approx(5.0, rel=0.05)
    assert abs(np.corrcoef(moves[0], moves[1])[0, 1]) < 0.1  # independent (the same noise: 1)
    assert not wrap(mlp(), generator=tf.random.Generator.from_seed(0)).secure_noise


def test_the_noise_generator_is_never_saved(tmp_path: Path) -> None:
    generator = tf.random.Generator.from_seed(1)
    wrapped = wrap(mlp(), generator=generator)
    wrapped.fit(masked_batch(2), epochs=1, verbose=0)
    assert generator.state.ref() not in {v.ref() for v in wrapped.variables}
    path = tf.train.Checkpoint(model=wrapped).write(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any("kernel" in name for name in names)  # the network is there
    assert not [name for name in names if "state_var" in name or "noise" in name], names


def test_no_noise_draws_nothing() -> None:
    generator = tf.random.Generator.from_seed(2)
    state = generator.state.numpy().copy()
    sums = [tf.ones([3])]
    out = add_noise(sums, mechanism=GaussianMechanism(noise_multiplier=0.0, clip=1.0), generator=generator)
    np.testing.assert_array_equal(out[0].numpy(), 1.0)
    np.testing.assert_array_equal(generator.state.numpy(), state)


@pytest.mark.parametrize("engine", ["fast", "vectorized"])
@pytest.mark.parametrize(
    ("name", "shape", "classes"), [("cnn", (28, 28, 1), 10), ("lenet", (16, 16, 1), 10), ("resnet20", (8, 8, 3), 4)]
)
def test_an_empty_batch_releases_noise(name: str, shape: tuple[int, ...], classes: int, engine: str) -> None:
    """A Poisson batch may be empty: the step still happens (the ledger counts it) and is noise only."""
    model = zoo.build_model(name, input_shape=shape, num_classes=classes, seed=0)
    wrapped = wrap(model, z=1.0, clip=1.0, expected=8.0, generator=tf.random.Generator.from_seed(4), engine=engine)
    wrapped.compile(
        optimizer=tf.keras.optimizers.SGD(1.0),
        loss=LOSS,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    empty = tf.data.Dataset.from_tensors(
        (np.zeros((0, *shape), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    )
    before = [v.numpy() for v in model.trainable_variables]
    history = wrapped.fit(empty, epochs=1, verbose=0).history
    moves = np.concatenate([(v.numpy() - b).ravel() for v, b in zip(model.trainable_variables, before, strict=True)])
    (want,) = reference_noise(model, stddev=1.0, seed=4)
    np.testing.assert_allclose(-moves * 8.0, want, rtol=1e-4, atol=1e-5)
    assert history["loss"] == [0.0] and history["accuracy"] == [0.0]  # no example was counted


def test_the_empty_batch_padding_passes_batches_through_without_a_branch() -> None:
    """A non-empty batch is returned as it is, an empty one as one zero example of weight 0, and the traced
    step holds no conditional around the batch (a tf.cond there made the MLP's DP step five times slower)."""
    spec = (tf.TensorSpec([None, 4, 3], tf.float32), tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32))
    padded = tf.function(at_least_one_example, input_signature=spec)
    x, y, mask = np.arange(24, dtype=np.float32).reshape(2, 4, 3), np.array([3, 1]), np.array([1.0, 0.5], np.float32)
    for got, want in zip(padded(x, y, mask), (x, y, mask), strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    ex, ey, emask = padded(np.zeros((0, 4, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert (
        ex.shape == (1, 4, 3)
        and not ex.numpy().any()
        and ey.numpy().tolist() == [0]
        and emask.numpy().tolist() == [0.0]
    )
    graph = padded.get_concrete_function().graph
    assert [o.shape.as_list() for o in graph.structured_outputs] == [[None, 4, 3], [None], [None]]  # static dims kept
    ops = {op.type for op in graph.get_operations()}
    assert not ops & {"If", "StatelessIf", "Switch", "Merge"}, ops


def test_the_mechanism_is_exposed_and_validated_once() -> None:
    mechanism = GaussianMechanism(noise_multiplier=1.1, clip=0.5)
    wrapped = DPSGDModel(mlp(), mechanism=mechanism, dp=DPSGDConfig(expected_batch_size=32.0))
    assert wrapped.mechanism is mechanism
    assert wrapped.step_event(0.01) == dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1))
    assert wrapped.get_config()["mechanism"] == {"noise_multiplier": 1.1, "clip": 0.5}
    with pytest.raises(ConfigError, match="noise multiplier must be a finite number >= 0, got -1"):
        GaussianMechanism(noise_multiplier=-1, clip=1.0)
    with pytest.raises(ConfigError, match="expected_batch_size must be a finite number > 0, got 0"):
        DPSGDConfig(expected_batch_size=0)
    with pytest.raises(ConfigError, match="engine must be one of auto, fast, vectorized; got 'tfp'"):
        DPSGDConfig(expected_batch_size=1.0, engine="tfp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mechanism must be a GaussianMechanism"):
        DPSGDModel(mlp(), mechanism=(1.1, 0.5), dp=DPSGDConfig(expected_batch_size=1.0))  # type: ignore[arg-type]
