"""DP-SGD (Abadi et al. 2016) as a Keras train step.

One noisy step, for a batch ``B`` drawn with sampling rate ``q``:

1. per-example gradients ``g_i`` over all trainable variables (fast layer taps, or vectorized);
2. clip each to L2 norm ``C``: ``g_i * min(1, C / |g_i|)``, and sum;
3. add Gaussian noise with standard deviation ``noise_multiplier * C`` to the sum, once per global batch
   (tensorflow-privacy's ``GaussianSumQuery``; under a multi-replica strategy only replica 0 adds it);
4. divide by the expected batch size ``q * N`` (Poisson sampling) or the batch size (shuffled batches),
   add the gradient of any weight regularization (data-independent), and apply with any optimizer.

:class:`DPSGDModel` wraps a Keras model (composition: it holds the model and delegates ``call``) and
overrides only ``train_step``, the documented Keras extension point; optimizers are untouched. Each step's
mechanism is described by :meth:`DPSGDConfig.step_event`, which the privacy ledger records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp

from fedmodel.errors import ConfigError
from fedmodel.privacy import taps as layer_taps
from fedmodel.privacy.vectorized import clip_factors, vectorized_clipped_sum

Engine = Literal["auto", "fast", "vectorized"]
ENGINES: tuple[str, ...] = (*get_args(Engine), "tfp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPSGDConfig:
    """Example-level DP-SGD settings.

    Attributes
    ----------
    l2_norm_clip:
        ``C``, the L2 bound on each example's gradient (over all variables jointly). Abadi et al. 2016 and
        the tensorflow-privacy MNIST tutorial use 1.0.
    noise_multiplier:
        ``z``: the noise standard deviation is ``z * C``. The tutorial uses 1.1 (epsilon about 2.6 at
        delta 1e-5 over 60 MNIST epochs at batch 256, by dp-accounting's RDP accountant).
    expected_batch_size:
        The divisor of the noised sum: ``q * N`` for Poisson sampling, the batch size for shuffled batches.
    engine:
        ``fast`` (per-layer taps; Dense, Conv2D, Embedding, LayerNorm, GroupNorm), ``vectorized`` (any
        model), or ``auto`` (fast when every trainable layer allows it).
    """

    l2_norm_clip: float
    noise_multiplier: float
    expected_batch_size: float
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        if not self.l2_norm_clip > 0:
            raise ConfigError(f"l2_norm_clip must be > 0, got {self.l2_norm_clip!r}")
        if not self.noise_multiplier >= 0:
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not self.expected_batch_size > 0:
            raise ConfigError(f"expected_batch_size must be > 0, got {self.expected_batch_size!r}")
        if self.engine not in get_args(Engine):
            raise ConfigError(f"engine must be one of {', '.join(get_args(Engine))}; got {self.engine!r}")

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the noise added to the clipped sum: ``noise_multiplier * l2_norm_clip``."""
        return self.noise_multiplier * self.l2_norm_clip

    def step_event(self, sampling_rate: float) -> dp_accounting.DpEvent:
        """The DpEvent of one step: a Poisson-subsampled Gaussian mechanism."""
        return dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier))


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


class ClippedSum:
    """Computes ``(sum_i clip(g_i), per-example norms, per-example losses)`` for a model.

    Chooses the engine once, at construction; :attr:`engine` says which one runs.
    """

    def __init__(self, model: tf.keras.Model, loss_fn: Any, *, l2_norm_clip: float, engine: Engine) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.l2_norm_clip = l2_norm_clip
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
            sums, norms = vectorized_clipped_sum(
                self.model, self.loss_fn, x, y, weights, l2_norm_clip=self.l2_norm_clip
            )
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
        norms = tf.sqrt(tf.add_n([tap.sq_norms(state) for tap, state in zip(self.taps, states, strict=True)]))
        c = clip_factors(norms, self.l2_norm_clip)
        flat = [s for tap, state in zip(self.taps, states, strict=True) for s in tap.clipped_sum(state, c)]
        sums: list[tf.Tensor | None] = [None] * len(flat)
        for position, value in zip(self._order, flat, strict=True):
            sums[position] = value
        return [s for s in sums if s is not None], norms, losses, logits


def add_gaussian_noise(sums: list[tf.Tensor], *, query: tfp.GaussianSumQuery) -> list[tf.Tensor]:
    """Noise the clipped sum once per global batch: on replica 0 only under a multi-replica strategy."""
    state = query.initial_global_state()
    replica = tf.distribute.get_replica_context()
    first = replica is None or replica.num_replicas_in_sync == 1
    if first:
        noised, _, _ = query.get_noised_result(sums, state)
        return list(noised)
    is_first = tf.equal(replica.replica_id_in_sync_group, 0)
    return tf.cond(is_first, lambda: list(query.get_noised_result(sums, state)[0]), lambda: list(sums))


class DPSGDModel(tf.keras.Model):
    """A Keras model whose ``fit`` runs DP-SGD; wraps ``model`` and shares its layers and weights.

    ``fit`` takes batches ``(x, y)`` or ``(x, y, mask)``; ``mask`` marks real examples (0 for padding in
    fixed-shape Poisson batches). Save ``wrapper.model``, not the wrapper.
    """

    def __init__(self, model: tf.keras.Model, dp: DPSGDConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.dp = dp
        self._clipped_sum: ClippedSum | None = None
        self.query = tfp.GaussianSumQuery(l2_norm_clip=dp.l2_norm_clip, stddev=dp.noise_stddev)
        self.clip_fraction = tf.keras.metrics.Mean(name="clipped")
        self.loss_mean = tf.keras.metrics.Mean(name="loss")

    @property
    def engine(self) -> str:
        """The engine that runs (``fast`` or ``vectorized``); known after ``compile``."""
        return self.clipped_sum.engine

    @property
    def clipped_sum(self) -> ClippedSum:
        if self._clipped_sum is None:
            self._clipped_sum = ClippedSum(
                self.model,
                per_example_loss(self.loss),
                l2_norm_clip=self.dp.l2_norm_clip,
                engine=self.dp.engine,
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
        return {"dp": dataclasses.asdict(self.dp)}

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.model(inputs, training=training)

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_mean, self.clip_fraction, *self.compiled_metrics.metrics]

    def noisy_gradients(self, x: tf.Tensor, y: tf.Tensor, mask: tf.Tensor) -> Result:
        """The DP gradient of one batch (steps 1-4 of the module docstring), plus norms, losses, logits."""
        sums, norms, losses, logits = self.clipped_sum(x, y, mask)
        noised = add_gaussian_noise(sums, query=self.query)
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
        grads, norms, losses, logits = self.noisy_gradients(x, y, mask)
        variables = self.model.trainable_variables
        grads = [tf.cast(g, v.dtype) for g, v in zip(grads, variables, strict=True)]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))

        clipped = tf.cast(norms > self.dp.l2_norm_clip, tf.float32)
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
