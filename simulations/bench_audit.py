"""Claimed epsilon vs empirical lower bound vs membership inference, for central DP-SGD and DP-FedAvg.

What is measured
----------------
Each row is one training run with a one-run audit (Steinke, Nasr & Jagielski 2023) built in, then
``fedmodel audit RUN_DIR`` on it (membership inference: loss threshold and offline LiRA with shadow
models trained by fedmodel on the same configuration). Every step is a command a user can type; the
table lists them.

- Central: the tutorial CNN on ``mnist5k`` (the settings of the DP-SGD utility table in BENCHMARKS.md:
  20 epochs, batch 64, SGD, clip 1.0, Poisson sampling, delta 1e-5), non-private and at target epsilon
  1, 3 and 8, each with 1,000 canary examples (random inputs with random labels; each secretly included
  with probability 1/2).
- Federated: ``simulations/mnist5k_mlp_dpfedavg.toml`` (200 Dirichlet clients, 50 per round, 40 rounds,
  adaptive clipping) at noise 0.5 and 1.0 with delta 1e-5 (the file's 1e-3 makes the one-run theorem's
  delta term 2 m delta = 0.4 with 200 canaries, which stops any bound) and without DP, each with 200
  canary clients.

Columns: the epsilon the ledger claims; the one-run lower bound at 95% confidence with the guesses it
rests on; the membership-inference AUC and TPR at 1% FPR of the loss attack and of LiRA (500 training
examples vs 500 test examples); the test accuracy of the model trained with the canaries.

Run ``uv run python -m simulations.bench_audit`` (``--help``); runs go to ``runs/bench-audit/`` and an
existing run is reused (delete it to measure again).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

CENTRAL = (
    "uv run fedmodel train --model cnn --dataset mnist5k --epochs 20 --batch-size 64 --optimizer sgd "
    "--seed 0 --no-tensorboard --no-checkpoints --format json --audit-canaries 1000 --run-dir {run_dir} "
)
CENTRAL_ROWS = {
    "central non-private": "--lr 0.05",
    "central DP eps 8": "--target-epsilon 8 --lr 0.25 --delta 1e-5 --l2-norm-clip 1.0 --sampling poisson",
    "central DP eps 3": "--target-epsilon 3 --lr 0.25 --delta 1e-5 --l2-norm-clip 1.0 --sampling poisson",
    "central DP eps 1": "--target-epsilon 1 --lr 0.25 --delta 1e-5 --l2-norm-clip 1.0 --sampling poisson",
}
FEDERATED = (
    "uv run fedmodel simulate simulations/mnist5k_mlp_dpfedavg.toml --set audit-canaries=200 --run-dir {run_dir} "
)
FEDERATED_ROWS = {
    "DP-FedAvg non-private": "--set dp-noise=none",
    "DP-FedAvg noise 0.5": "--set dp-noise=0.5 --set delta=1e-5",
    "DP-FedAvg noise 1.0": "--set dp-noise=1.0 --set delta=1e-5",
}
AUDIT = "uv run fedmodel audit {run_dir} --shadows {shadows} --targets 500"


def _slug(name: str) -> str:
    return name.replace(" ", "-").replace(".", "")


def _run(command: str, log: Path) -> float:
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    with log.open("a") as fh:
        done = subprocess.run(shlex.split(command), stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        print(f"  exit {done.returncode}; see {log}", flush=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-audit")
    parser.add_argument("--shadows", type=int, default=4, help="LiRA shadow models per central run")
    parser.add_argument(
        "--fed-shadows", type=int, default=2, help="LiRA shadow models per federated run (each a whole simulation)"
    )
    parser.add_argument("--skip-mia", action="store_true", help="train and one-run audits only")
    parser.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [(n, CENTRAL + a) for n, a in CENTRAL_ROWS.items()] + [(n, FEDERATED + a) for n, a in FEDERATED_ROWS.items()]
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    table = []
    for name, template in rows:
        if wanted and name not in wanted:
            continue
        run_dir = root / _slug(name)
        log = root / f"{_slug(name)}.log"
        command = template.format(run_dir=run_dir)
        if not (run_dir / "run.json").exists():
            _run(command, log)
        shadows = args.shadows if name.startswith("central") else args.fed_shadows
        audit_command = AUDIT.format(run_dir=run_dir, shadows=shadows)
        audit_path = run_dir / "audit.json"
        if not args.skip_mia and run_dir.exists():
            data = json.loads(audit_path.read_text()) if audit_path.exists() else {}
            if "membership" not in data:
                _run(audit_command, log)
        table.append((name, command, audit_command, run_dir))
    print_table(table)
    return 0


def _fmt(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def print_table(table: list[tuple[str, str, str, Path]]) -> None:
    print("| setting | claimed epsilon | lower bound (95%) | right / guesses | loss AUC | LiRA AUC | "
          "LiRA TPR@1% FPR | test accuracy |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _, run_dir in table:
        try:
            record = json.loads((run_dir / "run.json").read_text())
            audit = json.loads((run_dir / "audit.json").read_text())
        except (OSError, json.JSONDecodeError):
            print(f"| {name} | (no run) | | | | | | |")
            continue
        one = audit.get("one_run", {})
        mia = audit.get("membership", {})
        loss, lira = mia.get("loss", {}), mia.get("lira", {})
        metrics = record.get("metrics") or record.get("test_metrics") or {}
        print(
            f"| {name} | {_fmt(one.get('claimed_epsilon'))} | {_fmt(one.get('epsilon_lower_bound'))} | "
            f"{one.get('correct', '-')} / {one.get('guesses', '-')} | {_fmt(loss.get('auc'), 3)} | "
            f"{_fmt(lira.get('auc'), 3)} | {_fmt(lira.get('tpr_at_fpr_1%'), 3)} | {_fmt(metrics.get('accuracy'), 3)} |"
        )
    print()
    for name, command, audit_command, _ in table:
        print(f"- {name}: `{command}` then `{audit_command}`")


if __name__ == "__main__":
    sys.exit(main())
