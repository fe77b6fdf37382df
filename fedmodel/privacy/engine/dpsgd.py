"""DP-SGD (Abadi et al. 2016) as a Keras train step.

One noisy step, for a batch ``B`` drawn with sampling rate ``q``:

1. per-example gradients ``g_i`` over all trainable variables (fast layer taps, or vectorized);
2. clip each to L2 norm ``C``: ``g_i * min(1, C / |g_i|)``, and sum;
3. add Gaussian noise with standard deviation ``noise_multiplier * C`` to the sum, once per global batch
   (under a multi-replica strategy only replica 0 adds it);
4. divide by the expected batch size ``q * N`` (Poisson sampling) or the batch size (shuffled batches),
   add the gradient of any weight regularization (data-independent), and apply with any optimizer.

The pair ``(noise_multiplier, C)`` is one :class:`~fedmodel.privacy.mechanism.GaussianMechanism`;
:class:`DPSGDModel` holds it (``model.mechanism``) and describes each step by :meth:`DPSGDModel.step_event`,
which the privacy ledger records.

Randomness: the noise comes from a ``tf.random.Generator`` (Philox) keyed with fresh OS entropy
(:func:`fedmodel.privacy.randomness.tf_generator`), one per :class:`DPSGDModel`, never from ``--seed`` or
TensorFlow's global seed. Its state is a variable, so a retraced train step continues the sequence
instead of restarting it (as op-seeded ``tf.random.normal`` would). Each noise value is the sum of
:data:`~fedmodel.privacy.randomness.NOISE_DRAWS` standard normals divided by ``sqrt(NOISE_DRAWS)``
(Opacus' ``secure_mode`` mitigation of floating-point attacks on a single draw). The generator is kept out
of TensorFlow's checkpoint tracking: its state is the noise's key and is never written. Tests inject a
seeded generator (``noise_generator=``).

:class:`DPSGDModel` wraps a Keras model (composition: it holds the model and delegates ``call``) and
overrides only ``train_step``, the documented Keras extension point; optimizers are untouched.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, get_args

import dp_accounting
import tensorflow as tf

from fedmodel.errors import ConfigError
from fedmodel.privacy import randomness
from fedmodel.privacy.engine import taps as layer_taps
from fedmodel.privacy.engine.vectorized import clip_factors, vectorized_clipped_sum
from fedmodel.privacy.mechanism import GaussianMechanism

Engine = Literal["auto", "fast", "vectorized"]
ENGINES: tuple[str, ...] = (*get_args(Engine), "tfp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPSGDConfig:
    """How DP-SGD runs (the noise and the clip norm are the :class:`GaussianMechanism`).

    Attributes
    ----------
    expected_batch_size:
        The divisor of the noised sum (examples): ``q * N`` for Poisson sampling, the batch size for
        shuffled batches.
    engine:
        ``fast`` (per-layer taps; Dense, Conv2D, Embedding, LayerNorm, GroupNorm, LSTM), ``vectorized``
        (any model), or ``auto`` (fast when every trainable layer allows it).
    """

    expected_batch_size: float
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        size = self.expected_batch_size
        if isinstance(size, bool) or not isinstance(size, int | float) or not math.isfinite(size) or size <= 0:
            raise ConfigError(f"expected_batch_size must be a finite number > 0, got {size!r}")
        if self.engine not in get_args(Engine):
            raise ConfigError(f"engine must be one of {', '.join(get_args(Engine))}; got {self.engine!r}")


def per_example_loss(loss: tf.keras.losses.Loss) -> Any:
    """``(y, logits) -> (batch,)``: the loss of each example (mean over positions for sequences)."""
    config = loss.get_config()
    config["reduction"] = tf.keras.losses.Reduction.NONE
    unreduced = type(loss).from_config(config)

    def fn(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        values = tf.cast(unreduced(y, logits), tf.float32)
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return values

    return fn


Result = tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor]

_SIXTEEN_BIT = ("float16", "bfloat16")


def check_precision(model: tf.keras.Model) -> None:
    """Refuse layers whose per-example outputs depend on the rest of the batch under 16-bit compute.

    Keras' GroupNormalization computes its moments in its compute dtype; in bfloat16 the rounding of those
    reductions changes with the batch's size and content, so removing one example moves every other
    example's clipped gradient too: measured on ResNet-20 under ``mixed_bfloat16``, the clipped sum moves
    by up to 1.03-1.04 C, not C. Built in float32 (``dtype="float32"``, what :mod:`fedmodel.zoo` does
    under a mixed policy), the bound holds again.
    """
    bad = [
        f"{layer.name} ({type(layer).__name__}, computes in {layer.compute_dtype})"
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.GroupNormalization) and layer.compute_dtype in _SIXTEEN_BIT
    ]
    if bad:
        raise ConfigError(
            "DP-SGD needs these layers in float32 (in 16 bits their output depends on the rest of the batch, "
            f"and one example's effect on the clipped sum exceeds the clip norm): {', '.join(bad)}; "
            "build them with dtype='float32' or train with precision float32"
        )


class ClippedSum:
    """Computes ``(sum_i clip(g_i), per-example norms, per-example losses)`` for a model.

    Chooses the engine once, at construction; :attr:`engine` says which one runs. Norms and clip factors
    are float32 whatever the model's compute dtype.
    """

    def __init__(self, model: tf.keras.Model, loss_fn: Any, *, clip: float, engine: Engine) -> None:
        check_precision(model)
        self.model = model
        self.loss_fn = loss_fn
        self.clip = clip
        taps = layer_taps.model_taps(model) if engine != "vectorized" else None
        if engine == "fast" and taps is None:
            raise ConfigError(
                "engine 'fast' cannot handle these layers: "
                f"{', '.join(layer_taps.unsupported_layers(model))}; use engine 'auto' or 'vectorized'"
            )
        self.taps = taps
        self.engine: Literal["fast", "vectorized"] = "fast" if taps is not None else "vectorized"
        if taps is not None:
            self._forward = layer_taps.TappedForward(model, taps)
            tapped = [t.layer for t in taps]
            positions = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
            self._order = [positions[w.ref()] for layer in tapped for w in layer.trainable_weights]

    def __call__(self, x: tf.Tensor, y: tf.Tensor, weights: tf.Tensor) -> Result:
        """Clipped gradient sum (in ``model.trainable_variables`` order), norms, losses and logits."""
        if self.taps is None:
            logits = self.model(x, training=True)
            losses = self.loss_fn(y, logits)
            sums, norms = vectorized_clipped_sum(self.model, self.loss_fn, x, y, weights, clip=self.clip)
            return sums, norms, losses, logits
        return self._fast(x, y, weights)

    def _fast(self, x: tf.Tensor, y: tf.Tensor, weights: tf.Tensor) -> Result:
        assert self.taps is not None
        with tf.GradientTape() as tape:
            logits, inputs, outputs = self._forward(x)
            losses = self.loss_fn(y, logits)
            total = tf.reduce_sum(losses * tf.cast(weights, tf.float32))
        grads_out = tape.gradient(total, outputs)
        grads_z = [
            tap.pre_activation_grad(a, out, g)
            for tap, a, out, g in zip(self.taps, inputs, outputs, grads_out, strict=True)
        ]
        states = [tap.prepare(a, g) for tap, a, g in zip(self.taps, inputs, grads_z, strict=True)]
        sq = tf.add_n([tf.cast(tap.sq_norms(state), tf.float32) for tap, state in zip(self.taps, states, strict=True)])
        norms = tf.sqrt(sq)
        c = clip_factors(norms, self.clip)
        flat = [s for tap, state in zip(self.taps, states, strict=True) for s in tap.clipped_sum(state, c)]
        sums: list[tf.Tensor | None] = [None] * len(flat)
        for position, value in zip(self._order, flat, strict=True):
            sums[position] = value
        return [s for s in sums if s is not None], norms, losses, logits


def gaussian_noise(shapes: list[tf.TensorShape], *, stddev: float, generator: tf.random.Generator) -> list[tf.Tensor]:
    """float32 noise of standard deviation ``stddev`` for tensors of ``shapes``, from ``generator``.

    Each value is ``stddev * (n_1 + ... + n_k) / sqrt(k)`` with ``k =`` :data:`~fedmodel.privacy.randomness.
    NOISE_DRAWS` independent standard normals (Opacus ``secure_mode``); all of them come from one call on
    the generator, which advances its state by the number of values drawn.
    """
    sizes = [int(shape.num_elements()) for shape in shapes]
    draws = generator.normal([randomness.NOISE_DRAWS, sum(sizes)], dtype=tf.float32)
    flat = tf.reduce_sum(draws, axis=0) * tf.constant(stddev / math.sqrt(randomness.NOISE_DRAWS), tf.float32)
    return [tf.reshape(part, shape) for part, shape in zip(tf.split(flat, sizes), shapes, strict=True)]


def add_noise(
    sums: list[tf.Tensor], *, mechanism: GaussianMechanism, generator: tf.random.Generator
) -> list[tf.Tensor]:
    """The clipped sum plus the mechanism's noise, once per global batch: replica 0 only under a strategy."""
    if not mechanism.private:
        return list(sums)

    def noised() -> list[tf.Tensor]:
        noise = gaussian_noise([s.shape for s in sums], stddev=mechanism.stddev, generator=generator)
        return [s + n for s, n in zip(sums, noise, strict=True)]

    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return noised()
    return tf.cond(tf.equal(replica.replica_id_in_sync_group, 0), noised, lambda: list(sums))


def at_least_one_example(x: tf.Tensor, y: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """An empty batch as one masked-out example of zeros (weight 0: it adds nothing to the clipped sum).

    A Poisson batch may be empty; the step still happens (the ledger counts it) and must release noise,
    but convolutions and ``vectorized_map`` fail on a batch of 0 examples. The padding is ``tf.pad`` by
    ``max(1 - batch, 0)`` rows (zero rows for a non-empty batch, which passes the batch through), not a
    ``tf.cond``: a cond around the batch made the whole DP step several times slower on CPU (the zoo MLP's
    step from 8 to 40 ms at batch 256, BENCHMARKS.md).
    """
    missing = tf.maximum(1 - tf.shape(mask)[0], 0)

    def pad(t: tf.Tensor) -> tf.Tensor:
        first = tf.reshape(tf.stack([0, missing]), [1, 2])
        padded = tf.pad(t, tf.concat([first, tf.zeros([t.shape.rank - 1, 2], tf.int32)], axis=0))
        return tf.ensure_shape(padded, [None, *t.shape[1:]])  # tf.pad by a tensor forgets every static dim

    return pad(x), pad(y), pad(mask)


class _Untracked:
    """Holds the noise generator outside TensorFlow's checkpoint tracking (its state is the noise's key)."""

    def __init__(self, generator: tf.random.Generator) -> None:
        self.generator = generator


class DPSGDModel(tf.keras.Model):
    """A Keras model whose ``fit`` runs DP-SGD; wraps ``model`` and shares its layers and weights.

    ``mechanism`` is the Gaussian mechanism of every step (noise multiplier and clip norm); ``dp`` the
    divisor and the engine. ``noise_generator`` is for tests only: by default each wrapper draws from its
    own :func:`~fedmodel.privacy.randomness.tf_generator`, made here, so construct the wrapper inside the
    distribution strategy's scope when there is one (as its model).

    ``fit`` takes batches ``(x, y)`` or ``(x, y, mask)``; ``mask`` marks real examples (0 for padding in
    fixed-shape Poisson batches). Save ``wrapper.model``, not the wrapper.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        *,
        mechanism: GaussianMechanism,
        dp: DPSGDConfig,
        noise_generator: tf.random.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(mechanism, GaussianMechanism):
            raise TypeError(f"mechanism must be a GaussianMechanism, got {mechanism!r}")
        if not isinstance(dp, DPSGDConfig):
            raise TypeError(f"dp must be a DPSGDConfig, got {dp!r}")
        super().__init__(**kwargs)
        self.model = model
        self.mechanism = mechanism
        self.dp = dp
        self._noise = _Untracked(noise_generator if noise_generator is not None else randomness.tf_generator())
        self._clipped_sum: ClippedSum | None = None
        self.clip_fraction = tf.keras.metrics.Mean(name="clipped")
        self.loss_mean = tf.keras.metrics.Mean(name="loss")

    @property
    def noise_generator(self) -> tf.random.Generator:
        """Where the noise comes from (read-only)."""
        return self._noise.generator

    @property
    def secure_noise(self) -> bool:
        """True when the noise comes from OS entropy (not an injected test generator)."""
        return randomness.is_secure(self._noise.generator)

    def step_event(self, sampling_rate: float) -> dp_accounting.DpEvent:
        """The DpEvent of one step at sampling rate ``q``: the mechanism, Poisson-subsampled."""
        return dp_accounting.PoissonSampledDpEvent(sampling_rate, self.mechanism.event())

    @property
    def engine(self) -> str:
        """The engine that runs (``fast`` or ``vectorized``); known after ``compile``."""
        return self.clipped_sum.engine

    @property
    def clipped_sum(self) -> ClippedSum:
        if self._clipped_sum is None:
            self._clipped_sum = ClippedSum(
                self.model, per_example_loss(self.loss), clip=self.mechanism.clip, engine=self.dp.engine
            )
        return self._clipped_sum

    def compile(self, *args: Any, **kwargs: Any) -> None:
        super().compile(*args, **kwargs)
        if not isinstance(self.loss, tf.keras.losses.Loss):
            raise ConfigError(f"DP-SGD needs a tf.keras.losses.Loss instance, got {self.loss!r}")
        self._clipped_sum = None
        _ = self.clipped_sum

    def get_config(self) -> dict[str, Any]:
        """The DP settings (save ``self.model`` to keep the network itself)."""
        return {"dp": dataclasses.asdict(self.dp), "mechanism": dataclasses.asdict(self.mechanism)}

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.model(inputs, training=training)

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_mean, self.clip_fraction, *self.compiled_metrics.metrics]

    def noisy_gradients(self, x: tf.Tensor, y: tf.Tensor, mask: tf.Tensor) -> Result:
        """The DP gradient of one batch (steps 1-4 of the module docstring), plus norms, losses, logits."""
        sums, norms, losses, logits = self.clipped_sum(x, y, mask)
        noised = add_noise(sums, mechanism=self.mechanism, generator=self._noise.generator)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scale = tf.constant(1.0 / self.dp.expected_batch_size, tf.float32)
        grads = [n * scale for n in noised]
        if self.model.losses:  # weight regularization: no data, no clipping, no noise
            with tf.GradientTape() as tape:
                penalty = tf.add_n([tf.cast(p, tf.float32) for p in self.model.losses]) / replicas
            reg = tape.gradient(penalty, self.model.trainable_variables, unconnected_gradients="zero")
            grads = [g + tf.cast(r, tf.float32) for g, r in zip(grads, reg, strict=True)]
        return grads, norms, losses, logits

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, mask = tf.keras.utils.unpack_x_y_sample_weight(data)
        if mask is None:
            mask = tf.ones(tf.shape(y)[:1], tf.float32)
        mask = tf.cast(tf.reshape(mask, [-1]), tf.float32)
        size = tf.shape(mask)[0]
        grads, norms, losses, logits = self.noisy_gradients(*at_least_one_example(x, y, mask))
        variables = self.model.trainable_variables
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables, strict=True)]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))

        # Metrics of the real examples only (not the stand-in of an empty batch).
        norms, losses, logits = norms[:size], losses[:size], logits[:size]
        clipped = tf.cast(norms > self.mechanism.clip, tf.float32)
        self.clip_fraction.update_state(clipped, sample_weight=mask)
        self.loss_mean.update_state(losses, sample_weight=mask)
        self.compiled_metrics.update_state(y, logits, sample_weight=mask)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y, mask = tf.keras.utils.unpack_x_y_sample_weight(data)
        logits = self.model(x, training=False)
        losses = per_example_loss(self.loss)(y, logits)
        self.loss_mean.update_state(losses, sample_weight=mask)
        self.compiled_metrics.update_state(y, logits, sample_weight=mask)
        return {m.name: m.result() for m in self.metrics if m is not self.clip_fraction}
