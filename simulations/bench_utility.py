"""Utility: central training, FedAvg (IID, Dirichlet 0.1 and 1.0), DP-FedAvg and DP-FTRL, mean over seeds.

What is measured
----------------
Test accuracy after the last round (federated) or epoch (central) on the held-out test split, for every
setting on digits, mnist5k and the Shakespeare character LSTM, each over ``--seeds`` seeds (mean, sample
standard deviation and every seed's value). Every row is one real run of the CLI in its own process:

* ``central``: ``fedmodel train`` of the same model on all training examples (no federation, no DP);
* ``FedAvg IID`` / ``FedAvg Dirichlet 0.1`` / ``FedAvg Dirichlet 1.0``: ``fedmodel simulate`` (Flower
  simulation engine) with that partition; Shakespeare has one client per speaking role instead
  (``partition = natural``), so its rows are IID and per-speaker;
* ``DP-FedAvg``: client-level DP (McMahan et al. 2018), Poisson-sampled clients, clip 1.0, noise 1.0;
* ``DP-FTRL``: client-level DP by tree aggregation (Kairouz et al. 2021), no sampling, clip 1.0, noise 1.0.

Epsilon is the run's own ledger (``run.json`` ``privacy``), at the stated delta; the seed never drives the
privacy noise, so a seed changes the data order and initial weights, not the guarantee. The DP rows take
50 clients per round (client-level DP needs many clients per round; 100 or 256 is a tiny population for
it, which the epsilons show).

The run directories live under ``--root``; a run that finished is reused on the next invocation (the suite
can be stopped with Ctrl-C and run again), one that did not is started afresh.

Run ``uv run python -m simulations.bench_utility`` (``--quick`` for a smoke run, ``--json`` for the suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.bench import stop_group
from simulations.plotting import new_figure, save
from simulations.section import markdown, plot_link, write_section

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE_TEXT = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# McMahan et al.'s 2NN workload on the embedded image sets; the LEAF/TFF Shakespeare LSTM with one client per
# speaking role (256 roles have a full 80-character window in tiny-Shakespeare).
FEDERATED: dict[str, dict[str, Any]] = {
    "digits": {
        "model": "mlp", "hparam-hidden": "[200, 200]", "num-clients": 100, "clients-per-round": 10,
        "local-epochs": 5, "local-batch-size": 10, "client-lr": 0.05, "rounds": 20,
    },
    "mnist5k": {
        "model": "mlp", "hparam-hidden": "[200, 200]", "num-clients": 100, "clients-per-round": 10,
        "local-epochs": 5, "local-batch-size": 10, "client-lr": 0.05, "rounds": 20,
    },
    "shakespeare": {
        "model": "lstm", "hparam-units": 128, "seq-len": 80, "num-clients": 256, "clients-per-round": 10,
        "local-epochs": 1, "local-batch-size": 8, "client-lr": 1.0, "rounds": 10,
    },
}  # fmt: skip
CENTRAL: dict[str, list[str]] = {
    "digits": ["--model", "mlp", "--hparam", "hidden=(200, 200)", "--epochs", "30"],
    "mnist5k": ["--model", "mlp", "--hparam", "hidden=(200, 200)", "--epochs", "30"],
    "shakespeare": ["--model", "lstm", "--hparam", "units=128", "--seq-len", "80", "--epochs", "2"],
}
DP = {"clients-per-round": 50, "dp-noise": 1.0, "dp-clip": 1.0, "delta": 1e-3}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the table: a name, how it differs from the dataset's federated workload, where it applies."""

    name: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    central: bool = False
    datasets: tuple[str, ...] = ("digits", "mnist5k", "shakespeare")

    def applies(self, dataset: str) -> bool:
        return dataset in self.datasets

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


SETTINGS: tuple[Setting, ...] = (
    Setting("central", central=True),
    Setting("FedAvg IID", {"partition": "iid"}),
    Setting("FedAvg per speaker", {"partition": "natural"}, datasets=("shakespeare",)),
    Setting("FedAvg Dirichlet 0.1", {"partition": "dirichlet", "alpha": 0.1}, datasets=("digits", "mnist5k")),
    Setting("FedAvg Dirichlet 1.0", {"partition": "dirichlet", "alpha": 1.0}, datasets=("digits", "mnist5k")),
    Setting("DP-FedAvg", {"partition": "iid", **DP, "client-lr": 0.1}, datasets=("digits", "mnist5k")),
    Setting("DP-FedAvg", {"partition": "natural", **DP}, datasets=("shakespeare",)),
    Setting("DP-FTRL", {"partition": "iid", **DP, "dp-ftrl": "true", "client-lr": 0.1}, datasets=("digits", "mnist5k")),
    Setting("DP-FTRL", {"partition": "natural", **DP, "dp-ftrl": "true"}, datasets=("shakespeare",)),
)  # fmt: skip
ROW_ORDER = tuple(dict.fromkeys(s.name for s in SETTINGS))


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: a setting on a dataset with a seed, and the CLI arguments that run it."""

    dataset: str
    setting: Setting
    seed: int
    run_dir: Path
    args: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.setting.name} / seed {self.seed}"

    def shown_command(self) -> str:
        """The command as a user would type it (no run directory, ``--set`` values quoted)."""
        args = list(self.args)
        if "--run-dir" in args:
            at = args.index("--run-dir")
            del args[at : at + 2]
        shown = [a.replace(str(SHAKESPEARE_TEXT), "../shared/data/tinyshakespeare.txt") for a in args]
        return "uv run fedmodel " + shlex.join(shown)


@dataclasses.dataclass(frozen=True)
class Result:
    """What one run gave: test accuracy, the ledger's epsilon (DP rows) and wall seconds, or an error."""

    dataset: str
    setting: str
    seed: int
    accuracy: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    seconds: float | None = None
    error: str | None = None
    reused: bool = False


def jobs_for(datasets: Sequence[str], seeds: Sequence[int], *, root: Path, rounds: int | None,
             epochs: int | None, only: Sequence[str] | None) -> list[Job]:  # fmt: skip
    """Every run of the benchmark, in the order they run (dataset by dataset, seeds innermost)."""
    jobs = []
    for dataset in datasets:
        for setting in SETTINGS:
            if not setting.applies(dataset) or (only and setting.name not in only):
                continue
            for seed in seeds:
                run_dir = root / dataset / setting.slug / f"seed-{seed}"
                data = ["--data-path", str(SHAKESPEARE_TEXT)] if dataset == "shakespeare" else []
                if setting.central:
                    central = list(CENTRAL[dataset])
                    if epochs is not None:
                        central[central.index("--epochs") + 1] = str(epochs)
                    args = ["train", *central, "--dataset", dataset, *data, "--seed", str(seed),
                            "--validation-fraction", "0", "--no-tensorboard", "--no-checkpoints"]  # fmt: skip
                else:
                    values = {**FEDERATED[dataset], "dataset": dataset, **setting.overrides, "seed": seed,
                              "fraction-evaluate": 0.0}  # fmt: skip
                    if rounds is not None:
                        values["rounds"] = rounds
                    if data:
                        values["data-path"] = str(SHAKESPEARE_TEXT)
                    args = ["simulate"] + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
                args += ["--format", "json", "--run-dir", str(run_dir)]
                jobs.append(Job(dataset, setting, seed, run_dir, tuple(args)))
    return jobs


def _read(job: Job, output: dict[str, Any], seconds: float) -> Result:
    """A Result from the CLI's JSON output (train: flat metrics; simulate: ``final`` and ``privacy``)."""
    if job.setting.central:
        return Result(job.dataset, job.setting.name, job.seed, accuracy=output.get("accuracy"), seconds=seconds)
    final = output.get("final") or {}
    privacy = output.get("privacy") or {}
    epsilon = (privacy.get("epsilon") or {}).get("rdp") if privacy else None
    return Result(job.dataset, job.setting.name, job.seed, accuracy=final.get("accuracy"), epsilon=epsilon,
                  delta=privacy.get("delta") if privacy else None, seconds=seconds)  # fmt: skip


def run_job(job: Job, *, timeout: float) -> Result:
    """Run one job in its own process group (or reuse its finished result); Ctrl-C stops the whole group."""
    done = job.run_dir / "bench_result.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return dataclasses.replace(_read(job, saved["output"], saved["seconds"]), reused=True)
    if job.run_dir.exists():  # an earlier invocation stopped inside this run: start it afresh
        shutil.rmtree(job.run_dir)
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = job.run_dir.parent / f"{job.run_dir.name}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fedmodel.cli", *job.args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)  # fmt: skip
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except BaseException as err:  # timeout, Ctrl-C: stop the run's whole tree (Ray included)
            stop_group(proc)
            if isinstance(err, subprocess.TimeoutExpired):
                return Result(job.dataset, job.setting.name, job.seed, error=f"timed out after {timeout:.0f} s")
            raise
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
        return Result(job.dataset, job.setting.name, job.seed,
                      error=f"exit status {proc.returncode}: {tail[0][:300]} (log: {log_path})")  # fmt: skip
    try:
        output = json.loads(stdout)
    except json.JSONDecodeError:
        return Result(job.dataset, job.setting.name, job.seed, error=f"no JSON result (log: {log_path})")
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps({"output": output, "seconds": seconds, "command": job.shown_command()}, indent=2))
    tmp.replace(done)
    return _read(job, output, seconds)


# ---------------------------------------------------------------------------------------------------------------
# Tables and plot
# ---------------------------------------------------------------------------------------------------------------


def majority_accuracy(dataset: str) -> float:
    """Test accuracy of always predicting the test split's most frequent label (character, for Shakespeare)."""
    import numpy as np

    from fedmodel.data.registry import load_dataset

    path = SHAKESPEARE_TEXT if dataset == "shakespeare" else None
    labels = np.asarray(load_dataset(dataset, path=path, seq_len=80).y_test).ravel()
    return float(np.bincount(labels).max() / labels.size)


LEARNED_NOTHING = "†"


def _group(results: Sequence[Result]) -> dict[tuple[str, str], list[Result]]:
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.setting), []).append(r)
    return groups


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(results: Sequence[Result], majority: float | None = None) -> str:
    """``mean ± std`` of the accuracies (``n/k`` if some seeds failed), with epsilon for DP rows; marked
    :data:`LEARNED_NOTHING` when the mean is within 0.01 of always predicting the most frequent label."""
    accs = [r.accuracy for r in results if r.accuracy is not None]
    if not accs:
        return "failed"
    mean, std = _mean_std(accs)
    text = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    if majority is not None and mean <= majority + 0.01:
        text += f" {LEARNED_NOTHING}"
    if len(accs) < len(results):
        text += f" ({len(accs)}/{len(results)} seeds)"
    eps = [r.epsilon for r in results if r.epsilon is not None]
    if eps:
        text += f" (ε={max(eps):.2f})"
    return text


def tables(results: Sequence[Result], datasets: Sequence[str], majority: dict[str, float] | None = None) -> str:
    groups = _group(results)
    majority = majority or {}
    rows = [name for name in ROW_ORDER if any((d, name) in groups for d in datasets)]
    head = "| setting | " + " | ".join(datasets) + " |\n| --- |" + " --- |" * len(datasets)
    lines = [head]
    if majority:
        base = [f"{majority[d]:.3f}" if d in majority else "-" for d in datasets]
        lines.append("| most frequent label (no training) | " + " | ".join(base) + " |")
    for name in rows:
        cells = [cell(groups[(d, name)], majority.get(d)) if (d, name) in groups else "n/a" for d in datasets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    summary = "\n".join(lines)
    detail = ["| dataset | setting | accuracy per seed | ε (δ) | wall s per run |", "| --- | --- | --- | --- | --- |"]
    for (dataset, name), group in groups.items():
        per_seed = ", ".join(f"{r.seed}: {r.accuracy:.4f}" if r.accuracy is not None else f"{r.seed}: failed"
                             for r in group)  # fmt: skip
        eps = next((f"{r.epsilon:.2f} ({r.delta:g})" for r in group if r.epsilon is not None and r.delta), "-")
        secs = [r.seconds for r in group if r.seconds is not None]
        shown = f"{statistics.median(secs):.0f}" if secs else "-"
        detail.append(f"| {dataset} | {name} | {per_seed} | {eps} | {shown} |")
    if any(LEARNED_NOTHING in line for line in lines):
        summary += (
            f"\n\n{LEARNED_NOTHING}: no better than always predicting the most frequent label (within 0.01): "
            "the model learned only the label frequencies in the rounds given."
        )
    return summary + "\n\nEvery seed:\n\n" + "\n".join(detail)


def plot(results: Sequence[Result], datasets: Sequence[str], path: Path) -> Path:
    groups = _group(results)
    fig, axes = new_figure(len(datasets), (4.2 * len(datasets), 3.8))
    for ax, dataset in zip(axes, datasets, strict=True):
        names = [n for n in ROW_ORDER if (dataset, n) in groups]
        for x, name in enumerate(names):
            accs = [r.accuracy for r in groups[(dataset, name)] if r.accuracy is not None]
            if not accs:
                continue
            mean, std = _mean_std(accs)
            ax.bar(x, mean, yerr=std or 0.0, capsize=3, color="tab:red" if name.startswith("DP") else "tab:blue")
            ax.scatter([x] * len(accs), accs, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(names)), [n.replace("FedAvg ", "FedAvg\n") for n in names], rotation=45,
                      ha="right", fontsize=7)  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_title(dataset)
        ax.set_ylabel("test accuracy")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test accuracy, mean and spread over seeds (red: client-level DP)")
    return save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist5k,shakespeare")
    parser.add_argument("--only", default=None, help=f"settings, comma-separated, of: {', '.join(ROW_ORDER)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--rounds", type=int, default=None, help="override every federated row's rounds")
    parser.add_argument("--epochs", type=int, default=None, help="override the central rows' epochs")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is killed")
    parser.add_argument("--root", default="runs/bench/utility", help="run directories (finished runs are reused)")
    parser.add_argument("--json", default=None, help="write the section (Markdown + data) here for the suite")
    parser.add_argument("--plots", default=None, help="directory for utility_accuracy.png")
    parser.add_argument("--link-prefix", default=None, help="how the Markdown links the plot (default: --plots)")
    parser.add_argument("--quick", action="store_true", help="digits, one seed, 2 rounds, 2 epochs (smoke run)")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if unknown := set(args.datasets) - set(FEDERATED):
        parser.error(f"--datasets takes {', '.join(FEDERATED)}; got {', '.join(sorted(unknown))}")
    args.only = [s.strip() for s in args.only.split(",")] if args.only else None
    if args.only and (unknown := set(args.only) - set(ROW_ORDER)):
        parser.error(f"--only takes {', '.join(ROW_ORDER)}; got {', '.join(sorted(unknown))}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if args.quick:
        args.datasets, args.seeds, args.rounds, args.epochs = ["digits"], [0], 2, 2
    if not args.seeds or not args.datasets:
        parser.error("--seeds and --datasets must not be empty")
    if (args.rounds is not None and args.rounds < 1) or (args.epochs is not None and args.epochs < 1):
        parser.error("--rounds and --epochs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    skipped = []
    datasets = list(args.datasets)
    if "shakespeare" in datasets and not SHAKESPEARE_TEXT.is_file():
        datasets.remove("shakespeare")
        skipped.append(f"shakespeare skipped: {SHAKESPEARE_TEXT} not found (the play-formatted tiny-Shakespeare)")
    root = Path(args.root).resolve()
    jobs = jobs_for(datasets, args.seeds, root=root, rounds=args.rounds, epochs=args.epochs, only=args.only)
    results = []
    try:
        for i, job in enumerate(jobs, 1):
            print(f"[utility {i}/{len(jobs)}] {job.label} ...", file=sys.stderr, flush=True)
            result = run_job(job, timeout=args.timeout)
            results.append(result)
            shown = f"accuracy {result.accuracy:.4f}" if result.accuracy is not None else f"FAILED: {result.error}"
            if result.epsilon is not None:
                shown += f", epsilon {result.epsilon:.2f}"
            print(f"[utility {i}/{len(jobs)}] {job.label}: {shown}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("bench_utility: interrupted; finished runs are kept under --root and reused next time", file=sys.stderr)
        return 130
    rounds = {d: args.rounds or FEDERATED[d]["rounds"] for d in datasets}
    majority = {d: majority_accuracy(d) for d in datasets}
    reused = sum(r.reused for r in results)
    body = [
        (
            "Test accuracy on the held-out test split after the last round (mean ± sample std over seeds "
            f"{', '.join(map(str, args.seeds))}; ε: the run ledger's client-level epsilon at δ, RDP). Rounds: "
            + ", ".join(f"{d} {r}" for d, r in rounds.items())
            + ". digits and mnist5k: MLP (200, 200), 100 clients, 10 per round, 5 local epochs at batch 10, "
            "SGD 0.05; Shakespeare: the LSTM (128 units, 80 characters), 256 per-speaker clients, 10 per round, "
            "1 local epoch at batch 8, SGD 1.0 (IID: the same windows shuffled into 256 clients). DP rows: 50 "
            "clients per round, clip 1.0, noise multiplier 1.0 (DP-FedAvg: Poisson sampling, SGD 0.1 on the "
            "image sets; DP-FTRL: tree aggregation, no sampling). Central: `fedmodel train`, Adam 3e-3, batch 32, "
            + ", ".join(
                f"{d} {CENTRAL[d][CENTRAL[d].index('--epochs') + 1] if args.epochs is None else args.epochs}"
                for d in datasets
            )
            + " epochs."
        ),
        tables(results, datasets, majority),
        (
            f"{reused} of {len(results)} runs were reused from an earlier invocation (finished runs under "
            "`--root`); their wall seconds are from when they ran."
            if reused
            else ""
        ),
        "\n".join(f"- {s}" for s in skipped),
    ]
    failures = [r for r in results if r.error]
    if failures:
        body.append("Failed runs:\n\n" + "\n".join(f"- {r.dataset} / {r.setting} / seed {r.seed}: {r.error}"
                                                     for r in failures))  # fmt: skip
    if args.plots and any(r.accuracy is not None for r in results):
        png = plot(results, datasets, Path(args.plots) / "utility_accuracy.png")
        body.append(plot_link(args, png, "test accuracy per setting and dataset"))
    seen: dict[tuple[str, str], str] = {}
    for job in jobs:  # one command per (dataset, setting): the seed's value is the only difference
        seen.setdefault((job.dataset, job.setting.name), job.shown_command())
    body.append(f"Commands (seed {args.seeds[0]} shown; the others differ only in `seed`):\n\n"
                + "\n".join(f"    {c}" for c in seen.values()))  # fmt: skip
    if args.json:
        write_section(args.json, name="utility", title="Utility: central, FedAvg, DP-FedAvg and DP-FTRL",
                      command="uv run python -m simulations.bench_utility", quick=args.quick, started=started,
                      began=began, body=body, data={"results": [dataclasses.asdict(r) for r in results],
                                                    "root": str(root), "skipped": skipped})  # fmt: skip
    else:
        print(markdown(body, quick=args.quick))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
