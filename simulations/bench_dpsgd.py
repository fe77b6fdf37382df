"""Speed of one DP-SGD training step: fedmodel's engine against tensorflow-privacy's, relative to plain Keras.

What is measured
----------------
For each setting (a zoo model, an input shape and a batch size) and each implementation, the wall-clock
milliseconds of one ``model.fit`` step on random data, and its ratio to the non-private step:

* ``keras (non-private)``: ``tf.keras.optimizers.SGD`` with the ordinary mean loss; the baseline (ratio 1).
* ``keras (non-private), fedmodel forward``: the same, but the forward pass is the fast engine's (for the
  lstm: its replacement LSTM call with ``x W + b`` before the time loop), to separate what the
  replacement call itself saves from what DP costs. Other models call every layer as Keras does: not
  measured twice.
* ``fedmodel DPSGDModel``: :class:`fedmodel.privacy.engine.dpsgd.DPSGDModel` with ``engine="auto"``; the row says
  which engine ran (``fast`` per-layer taps or ``vectorized``).
* ``tfp DPKerasSGDOptimizer``: tensorflow-privacy's DP optimizer, ``num_microbatches = batch``
  (one microbatch per example, as DP-SGD needs) and a loss with ``Reduction.NONE``.
* ``tfp VectorizedDPKerasSGDOptimizer``: the same with its ``vectorized_map`` gradients.
* ``tfp DPModel``: ``make_dp_model_class`` (``DPSequential`` / ``DPModel``) built from the zoo model's
  inputs and outputs, with a standard optimizer and reduced loss, without a layer registry (per-example
  gradients by ``vectorized_map``) and with ``layer_registry.make_default_layer_registry()`` (the
  ghost-norm "fast clipping", used only when every trainable layer is registered: Dense and Embedding in
  0.9; the row says whether it was). ``use_xla`` is tensorflow-privacy's default (``True``).

How
---
One in-memory batch ``(x, y)`` is repeated by ``tf.data.Dataset.from_tensors((x, y)).repeat()``, so input
costs nothing. Each implementation runs in its own fresh process (forked from a server that has already
imported TensorFlow) and is warmed up by ``--warmup`` untimed steps in separate ``fit`` calls (Keras keeps
its traced train function between them): the first traces (and XLA-compiles), the second is timed alone
to estimate the cost of the timed part. When ``repeats x steps`` would exceed ``--budget`` seconds, fewer
steps per repeat are timed (the note says so); when not even one step per repeat fits, the row is
``skipped (too slow: est. X s)``, X being the full ``repeats x steps``. A process that has not answered
after ``--timeout`` seconds (tracing included) is killed and its row skipped. The timed part is one
``fit(epochs=repeats, steps_per_epoch=steps)``; a callback times each epoch and the table shows the median
over epochs of ``epoch time / steps``. ``verbose=0``, no validation, no other callbacks. Implementations
run one after another, so other load on the machine shows up in every row alike. The optimizer arithmetic
is the same in all rows (plain SGD); the DP rows differ only in how they get clipped, noised gradients.
Both tfp optimizers take per-microbatch gradients with ``tape.jacobian``; they differ in the clipping loop.

Run ``uv run python -m simulations.bench_dpsgd`` (``--quick`` for a smoke run; ``--help`` for options).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry
from tensorflow_privacy.privacy.keras_models import dp_keras_model

from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel
from fedmodel.privacy.engine.taps import TappedForward, model_taps
from fedmodel.privacy.mechanism import GaussianMechanism
from fedmodel.zoo import available_models, build_model, get_spec
from simulations.plotting import new_figure, save
from simulations.section import plot_link, write_section

# Each implementation runs in a fresh process forked from a server that has already imported TensorFlow:
# a clean graph and allocator per row, a hard time limit, and no second TensorFlow import.
CONTEXT = multiprocessing.get_context("forkserver")

L2_NORM_CLIP = 1.0
NOISE_MULTIPLIER = 1.1
LEARNING_RATE = 0.15


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """One model at one input shape and batch size."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    batch: int

    @property
    def sequence(self) -> bool:
        return get_spec(self.model).task == "next-token"

    def title(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        unit = f"vocab {self.num_classes}" if self.sequence else f"{self.num_classes} classes"
        return f"{self.model}: input {shape}, {unit}, batch {self.batch}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a table: ``ms`` is ``None`` when the implementation was skipped or failed."""

    name: str
    ms: float | None
    note: str = ""


class NotApplicable(Exception):
    """The implementation would run the same code as another row; not measured twice."""


Built = tuple[tf.keras.Model, str]
Builder = Callable[[Setting], Built]


def default_models() -> list[str]:
    """Every zoo model, the cheap ones first so that ``--deadline`` cuts the costly ones."""
    last = ("resnet20", "transformer", "lstm")
    return [m for m in available_models() if m not in last] + [m for m in last if m in available_models()]


def default_setting(model: str, *, batch: int | None) -> Setting:
    """The input shape, class count and batch of ``model`` when ``--batch`` does not set the batch.

    Image and vector models at 28x28x1, batch 256; resnet20 at 32x32x3 and the sequence models (length 80,
    vocabulary 86) at batch 64, the lstm at 32: their non-private steps are already 10-100x the cnn's.
    """
    spec = get_spec(model)
    if spec.task == "next-token":
        return Setting(model=model, input_shape=(80,), num_classes=86, batch=batch or (32 if model == "lstm" else 64))
    if model == "resnet20":
        return Setting(model=model, input_shape=(32, 32, 3), num_classes=10, batch=batch or 64)
    return Setting(model=model, input_shape=(28, 28, 1), num_classes=10, batch=batch or 256)


def random_batch(setting: Setting, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and labels: tokens and next tokens for sequence models, uniform pixels otherwise."""
    rng = np.random.default_rng(seed)
    shape = (setting.batch, *setting.input_shape)
    if setting.sequence:
        tokens = rng.integers(0, setting.num_classes, size=shape, dtype=np.int32)
        return tokens, rng.integers(0, setting.num_classes, size=shape, dtype=np.int32)
    pixels = rng.random(shape, dtype=np.float32)
    return pixels, rng.integers(0, setting.num_classes, size=(setting.batch,), dtype=np.int32)


def zoo_model(setting: Setting) -> tf.keras.Model:
    return build_model(setting.model, input_shape=setting.input_shape, num_classes=setting.num_classes, seed=0)


def loss(reduction: str = tf.keras.losses.Reduction.AUTO) -> tf.keras.losses.Loss:
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def keras_baseline(setting: Setting) -> Built:
    model = zoo_model(setting)
    model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE), loss=loss())
    return model, ""


def fedmodel_engine(setting: Setting) -> Built:
    wrapper = DPSGDModel(
        zoo_model(setting),
        mechanism=GaussianMechanism(noise_multiplier=NOISE_MULTIPLIER, clip=L2_NORM_CLIP),
        dp=DPSGDConfig(expected_batch_size=setting.batch, engine="auto"),
    )
    wrapper.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE), loss=loss())
    return wrapper, f"engine: {wrapper.engine}"


class ForwardBaseline(tf.keras.Model):
    """Non-private SGD through the fast engine's own forward pass (which replaces an LSTM's call)."""

    def __init__(self, net: tf.keras.Model, forward: TappedForward) -> None:
        super().__init__()
        self.net = net
        self.forward = forward

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.net(inputs, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data
        with tf.GradientTape() as tape:
            value = self.compiled_loss(y, self.forward(x)[0])
        variables = self.net.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(value, variables), variables, strict=True))
        return {"loss": value}


def keras_fedmodel_forward(setting: Setting) -> Built:
    model = zoo_model(setting)
    taps = model_taps(model)
    if taps is None or all(tap.forward is None for tap in taps):
        raise NotApplicable("same as keras (non-private): the fast engine calls every layer as Keras does")
    baseline = ForwardBaseline(model, TappedForward(model, taps))
    baseline.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE), loss=loss())
    return baseline, "no DP; the LSTM runs through fedmodel's replacement call"


def tfp_optimizer(vectorized: bool) -> Builder:
    cls = tfp.VectorizedDPKerasSGDOptimizer if vectorized else tfp.DPKerasSGDOptimizer

    def build(setting: Setting) -> Built:
        model = zoo_model(setting)
        optimizer = cls(
            l2_norm_clip=L2_NORM_CLIP,
            noise_multiplier=NOISE_MULTIPLIER,
            num_microbatches=setting.batch,
            learning_rate=LEARNING_RATE,
        )
        model.compile(optimizer=optimizer, loss=loss(tf.keras.losses.Reduction.NONE))
        return model, ""

    return build


def tfp_dp_model(registry: bool) -> Builder:
    def build(setting: Setting) -> Built:
        base = zoo_model(setting)
        kwargs: dict[str, Any] = {
            "l2_norm_clip": L2_NORM_CLIP,
            "noise_multiplier": NOISE_MULTIPLIER,
            "layer_registry": layer_registry.make_default_layer_registry() if registry else None,
        }
        if isinstance(base, tf.keras.Sequential):
            model = dp_keras_model.DPSequential(layers=base.layers, **kwargs)
            kind = "DPSequential"
        else:
            model = dp_keras_model.DPModel(inputs=base.inputs, outputs=base.outputs, **kwargs)
            kind = "DPModel"
        if registry and not getattr(model, "_enable_fast_peg_computation", False):
            missing = sorted(
                {type(layer).__name__ for layer in base.layers if layer.trainable_weights} - {"Dense", "Embedding"}
            )
            raise NotApplicable(f"same path as tfp DPModel: no registry function for {', '.join(missing)}")
        model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE), loss=loss())
        return model, f"{kind}; fast clipping" if registry else kind

    return build


IMPLEMENTATIONS: dict[str, Builder] = {
    "keras (non-private)": keras_baseline,
    "keras (non-private), fedmodel forward": keras_fedmodel_forward,
    "fedmodel DPSGDModel (auto)": fedmodel_engine,
    "tfp DPKerasSGDOptimizer": tfp_optimizer(vectorized=False),
    "tfp VectorizedDPKerasSGDOptimizer": tfp_optimizer(vectorized=True),
    "tfp DPModel": tfp_dp_model(registry=False),
    "tfp DPModel + layer registry": tfp_dp_model(registry=True),
}


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall-clock seconds of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """``budget``: seconds for the timed steps; ``timeout``: hard limit per implementation (with tracing)."""

    steps: int
    repeats: int
    warmup: int
    budget: float
    timeout: float


def with_note(note: str, extra: str) -> str:
    return f"{note}; {extra}" if note else extra


def measure(name: str, setting: Setting, timing: Timing) -> Row:
    """Median ms/step of ``timing.repeats`` epochs after warm-up; fewer steps or a skip when slow."""
    x, y = random_batch(setting)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model, note = IMPLEMENTATIONS[name](setting)
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)  # tracing (and XLA compilation)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)  # one traced step: the estimate
    probe = time.perf_counter() - start
    steps = min(timing.steps, int(timing.budget / (probe * timing.repeats)))
    if steps < 1:
        estimate = probe * timing.steps * timing.repeats
        return Row(name, None, with_note(note, f"skipped (too slow: est. {estimate:.0f} s; 1 step {probe:.1f} s)"))
    if timing.warmup > 2:
        model.fit(data, epochs=1, steps_per_epoch=min(timing.warmup - 2, steps), verbose=0)
    timer = EpochTimer()
    model.fit(data, epochs=timing.repeats, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    if steps < timing.steps:
        note = with_note(note, f"{steps} step{'s' if steps > 1 else ''} per repeat (budget {timing.budget:.0f} s)")
    return Row(name, 1000 * statistics.median(timer.seconds) / steps, note)


def child(name: str, setting: Setting, timing: Timing, conn: Connection, quiet: bool) -> None:
    """Runs in a fresh process: measure one implementation and send back its :class:`Row`."""
    if quiet:  # TensorFlow's C++ logs and pfor's fallback warnings, thousands of lines for some models
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)
    try:
        row = measure(name, setting, timing)
    except NotApplicable as reason:
        row = Row(name, None, str(reason))
    except Exception as error:  # a reference engine failing is a result, not a crash
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        last = (lines or [""])[-1]
        kind = type(error).__name__
        row = Row(name, None, f"failed: {last if last.startswith(kind) else f'{kind}: {last}'}"[:260])
    conn.send(row)
    conn.close()


def run_isolated(name: str, setting: Setting, timing: Timing, *, quiet: bool) -> Row:
    """:func:`measure` in a child process, killed after ``timing.timeout`` seconds."""
    receive, send = CONTEXT.Pipe(duplex=False)
    process = CONTEXT.Process(target=child, args=(name, setting, timing, send, quiet))
    start = time.perf_counter()
    process.start()
    send.close()
    try:
        if receive.poll(timing.timeout):
            return receive.recv()
        elapsed = time.perf_counter() - start
        return Row(name, None, f"skipped (too slow: no result in {elapsed:.0f} s, tracing included)")
    except EOFError:
        return Row(name, None, f"failed: the process died (exit code {process.exitcode})")
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def run_setting(setting: Setting, timing: Timing, names: Sequence[str], *, quiet: bool, deadline: float) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        left = deadline - time.perf_counter()
        if left < 5:
            row = Row(name, None, "skipped (the script's --deadline has passed)")
        else:
            row = run_isolated(
                name, setting, dataclasses.replace(timing, timeout=min(timing.timeout, left)), quiet=quiet
            )
        rows.append(row)
        print(f"  {name}: {format_ms(row)} {row.note}", file=sys.stderr, flush=True)
    return rows


def format_ms(row: Row) -> str:
    return "-" if row.ms is None else f"{row.ms:.1f}"


def table(setting: Setting, rows: Sequence[Row]) -> str:
    base = next((r.ms for r in rows if r.name.startswith("keras") and r.ms is not None), None)
    lines = [
        f"### {setting.title()}",
        "",
        "| implementation | ms/step | x non-private | note |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        ratio = "-" if row.ms is None or base is None else f"{row.ms / base:.2f}"
        lines.append(f"| {row.name} | {format_ms(row)} | {ratio} | {row.note} |")
    return "\n".join(lines)


def machine() -> str:
    threads = (tf.config.threading.get_intra_op_parallelism_threads(),)  # 0: TensorFlow's default
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, tensorflow-privacy {tfp.__version__}; "
        f"intra-op threads {threads[0] or 'auto'}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(default_models()), help="comma-separated zoo models")
    parser.add_argument("--batch", type=int, default=None, help="batch for every model (default per model)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 2; includes tracing)")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds of timed steps per implementation")
    parser.add_argument("--timeout", type=float, default=40.0, help="hard seconds per implementation")
    parser.add_argument("--deadline", type=float, default=580.0, help="seconds for the whole run; later rows skip")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's logs from the measurements")
    parser.add_argument("--only", default="", help="comma-separated substrings of implementation names")
    parser.add_argument("--quick", action="store_true", help="cnn and mlp, 3 steps, 2 repeats, 2 warm-up")
    parser.add_argument("--json", default=None, help="write the section (Markdown + data) here for the suite")
    parser.add_argument("--plots", default=None, help="directory for dpsgd_cost.png")
    parser.add_argument("--link-prefix", default=None, help="how the Markdown links the plot (default: --plots)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.steps, args.repeats, args.warmup = "cnn,mlp", 3, 2, 2
    unknown = sorted(set(args.models.split(",")) - set(available_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; expected some of {', '.join(available_models())}")
    for name, least in (("steps", 1), ("repeats", 1), ("warmup", 2)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be >= {least}, got {getattr(args, name)}")
    return args


def summary(results: Sequence[tuple[Setting, Sequence[Row]]]) -> str:
    """One table: each model's DP step as a multiple of its non-private Keras step, per implementation."""
    names = [n for n in IMPLEMENTATIONS if not n.startswith("keras")]
    lines = [
        "| model (batch) | keras ms | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for setting, rows in results:
        by = {r.name: r for r in rows}
        base = by.get("keras (non-private)")
        cells = []
        for name in names:
            row = by.get(name)
            ok = row is not None and row.ms is not None and base is not None and base.ms is not None
            cells.append(f"{row.ms / base.ms:.2f}x" if ok else "-")  # type: ignore[union-attr,operator]
        lines.append(
            f"| {setting.model} ({setting.batch}) | {format_ms(base) if base else '-'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def plot(results: Sequence[tuple[Setting, Sequence[Row]]], path: str) -> str:
    """Grouped bars: x non-private per model and DP implementation (log scale)."""
    names = [n for n in IMPLEMENTATIONS if not n.startswith("keras")]
    fig, (ax,) = new_figure(1, (max(8.0, 1.4 * len(results) + 3), 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs, ys = [], []
        for i, (_, rows) in enumerate(results):
            by = {r.name: r.ms for r in rows}
            base, ms = by.get("keras (non-private)"), by.get(name)
            if base and ms:
                xs.append(i + (k - (len(names) - 1) / 2) * width)
                ys.append(ms / base)
        ax.bar(xs, ys, width=width, label=name)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(results)), [f"{s.model}\n(batch {s.batch})" for s, _ in results])
    ax.set_ylabel("DP step time / non-private Keras step")
    ax.set_title("DP-SGD cost per zoo model (lower is better; missing bar: skipped or failed)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return str(save(fig, path))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    timing = Timing(
        steps=args.steps, repeats=args.repeats, warmup=args.warmup, budget=args.budget, timeout=args.timeout
    )
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    names = [n for n in IMPLEMENTATIONS if n.startswith("keras") or not wanted or any(w in n for w in wanted)]
    CONTEXT.set_forkserver_preload(["tensorflow", "tensorflow_privacy", "fedmodel.zoo.registry"])
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    header = [
        machine(),
        (
            f"timing: {timing.warmup} warm-up steps, then median of {timing.repeats} x {timing.steps} steps; "
            f"timed steps capped at {timing.budget:.0f} s and each implementation at {timing.timeout:.0f} s; "
            f"DP: clip {L2_NORM_CLIP}, noise {NOISE_MULTIPLIER}; SGD lr {LEARNING_RATE}"
        ),
    ]
    out = sys.stderr if args.json else sys.stdout
    print("\n".join(header) + "\n", file=out, flush=True)
    start = time.perf_counter()
    results: list[tuple[Setting, Sequence[Row]]] = []
    for model in args.models.split(","):
        setting = default_setting(model, batch=args.batch)
        print(f"[{setting.title()}]", file=sys.stderr, flush=True)
        rows = run_setting(setting, timing, names, quiet=not args.verbose, deadline=start + args.deadline)
        results.append((setting, rows))
        print(table(setting, rows) + "\n", file=out, flush=True)
    print(f"total {time.perf_counter() - start:.0f} s", file=out)
    if not args.json:
        return
    body = [
        "; ".join(header) + ".",
        summary(results),
    ]
    if args.plots:
        png = plot(results, os.path.join(args.plots, "dpsgd_cost.png"))
        body.append(plot_link(args, png, "DP-SGD step cost per model"))
    body += [table(setting, rows).replace("### ", "#### ", 1) for setting, rows in results]
    data = [{"setting": dataclasses.asdict(s), "rows": [dataclasses.asdict(r) for r in rows]} for s, rows in results]
    write_section(args.json, name="dpsgd", title="DP-SGD: cost of one training step per zoo model",
                  command="uv run python -m simulations.bench_dpsgd", quick=args.quick, started=started, began=start,
                  body=body, data=data)  # fmt: skip


if __name__ == "__main__":
    main()
