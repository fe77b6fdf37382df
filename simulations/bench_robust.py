"""Accuracy by defense x attack x attacker fraction: robust aggregation against poisoned clients.

What is measured
----------------
Each cell is one ``fedmodel simulate`` run (Flower's simulation engine) of the workload below with a share
of malicious clients (``attack``, ``attack-fraction``; see :mod:`fedmodel.federated.attacks`) and a
server-side defense; the cell is the final model's accuracy on the held-out test set. Attackers are chosen
with the run's seed, so every defense faces the same clients. No DP in this table.

Workload: ``mnist5k``, MLP with one hidden layer of 64, 20 IID clients, 10 per round, 15 rounds, 1 local
epoch at batch 20, client learning rate 0.1.

Defenses: ``fedavg`` (none), ``fedmedian`` (coordinate-wise median), ``fedtrimmedavg`` (trim 20% each
side), ``multikrum`` (Krum scores assuming 3 attackers, average the 5 best), ``norm-bound`` (FedAvg of
updates clipped to L2 norm ``--norm-bound``, no noise), ``dp-clip`` (DP-FedAvg: the same clip with Poisson
client sampling and noise multiplier 0.1, i.e. norm bounding *with* DP; epsilon is large at this noise).
Malformed replies (NaN/Inf, wrong shapes) are rejected by the server before any defense sees them.

Run ``uv run python -m simulations.bench_robust`` (``--help``); runs go to ``runs/bench-robust/``, an
existing run is reused, and the table (Markdown) and ``robust_accuracy.png`` are printed/written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

BASE = (
    "uv run fedmodel simulate --set model=mlp --set hparam-hidden=[64] --set dataset=mnist5k --set num-clients=20 "
    "--set clients-per-round=10 --set rounds=15 --set partition=iid --set local-epochs=1 --set local-batch-size=20 "
    "--set client-lr=0.1 --set fraction-evaluate=0.0 --set seed=0"
)
DEFENSES = {
    "fedavg": "--set strategy=fedavg",
    "fedmedian": "--set strategy=fedmedian",
    "fedtrimmedavg": "--set strategy=fedtrimmedavg --set trim-beta=0.2",
    "multikrum": "--set strategy=multikrum --set krum-byzantine=3 --set krum-keep=5",
    "norm-bound": "--set strategy=fedavg --set norm-bound={norm_bound}",
    "dp-clip": "--set strategy=fedavg --set dp-noise=0.1 --set dp-clip={norm_bound} --set delta=1e-5",
}
ATTACKS = ("sign-flip", "scale", "noise", "nan", "label-flip")
FRACTIONS = (0.3, 0.1, 0.2)  # the most telling column first


def command(defense: str, attack: str, fraction: float, run_dir: Path, norm_bound: float) -> str:
    parts = [BASE, DEFENSES[defense].format(norm_bound=norm_bound)]
    if fraction > 0:
        parts.append(f"--set attack={attack} --set attack-fraction={fraction}")
    parts.append(f"--run-dir {run_dir}")
    return " ".join(parts)


def accuracy(run_dir: Path) -> float | None:
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    value = (record.get("test_metrics") or {}).get("accuracy")
    return float(value) if isinstance(value, int | float) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-robust")
    parser.add_argument("--defenses", default=",".join(DEFENSES))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument(
        "--fractions", default=",".join(str(f) for f in FRACTIONS), help="run in this order (the table sorts them)"
    )
    parser.add_argument("--norm-bound", type=float, default=1.0, help="L2 bound of norm-bound and dp-clip")
    parser.add_argument("--plot", default="robust_accuracy.png")
    args = parser.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    defenses = [d for d in args.defenses.split(",") if d]
    attacks = [a for a in args.attacks.split(",") if a]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    results: dict[tuple[str, str, float], float | None] = {}
    commands: list[str] = []
    # column by column (no attack first, then each attack at each fraction), so a partial run fills whole columns
    cells = [("none", 0.0)] + [(a, f) for f in fractions for a in attacks]
    for attack, fraction in cells:
        for defense in defenses:
            run_dir = root / f"{defense}-{attack}-{fraction:g}"
            cmd = command(defense, attack, fraction, run_dir, args.norm_bound)
            if accuracy(run_dir) is None:
                print(f"$ {cmd}", flush=True)
                with (root / f"{run_dir.name}.log").open("w") as log:
                    subprocess.run(shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT, check=False)
            results[(defense, attack, fraction)] = accuracy(run_dir)
            if fraction == 0:
                commands.append(cmd)
    shown = sorted(fractions)
    print_table(results, defenses, attacks, shown)
    plot(Path(args.plot), results, defenses, attacks, shown)
    print(f"\nExample command (no attack): `{commands[0]}`; a cell adds `--set attack=A --set attack-fraction=F`.")
    return 0


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(
    results: dict[tuple[str, str, float], float | None],
    defenses: list[str],
    attacks: list[str],
    fractions: list[float],
) -> None:
    header = ["defense", "no attack"] + [f"{a} {f:.0%}" for a in attacks for f in fractions]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for d in defenses:
        row = [d, _cell(results.get((d, "none", 0.0)))]
        row += [_cell(results.get((d, a, f))) for a in attacks for f in fractions]
        print("| " + " | ".join(row) + " |")


def plot(
    path: Path,
    results: dict[tuple[str, str, float], float | None],
    defenses: list[str],
    attacks: list[str],
    fractions: list[float],
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(attacks), 3.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(attacks), sharey=True, squeeze=False)[0]
    xs = [0.0, *fractions]
    for ax, attack in zip(axes, attacks, strict=True):
        for d in defenses:
            ys = [results.get((d, "none", 0.0))] + [results.get((d, attack, f)) for f in fractions]
            ax.plot([x * 100 for x in xs], [float("nan") if y is None else y for y in ys], marker="o", label=d)
        ax.set_title(attack)
        ax.set_xlabel("malicious clients (%)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
