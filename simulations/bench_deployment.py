"""Seconds per federated round: Flower's simulation engine vs the real deployment engine on loopback.

The same settings run three ways, one after another, in one invocation:

(a) ``simulation``: ``fedmodel simulate`` (Ray, one actor per core);
(b) ``deployment, warm``: ``fedmodel deploy trial`` (TLS SuperLink, node authentication, N SuperNodes with
    ``--isolation process`` and fedmodel's long-lived executor, ``flwr run``);
(c) ``deployment, cold``: the same with Flower's default isolation (a new ``flwr-clientapp`` process,
    TensorFlow import included, per message).

Per-round seconds are the ServerApp's own measure (``diagnostics.json``: from sampling to the checkpoint,
including the server's test-set evaluation and federated evaluation); the table shows the median of rounds
2..R (round 1 holds start-up), the ratio to the simulation, and the one-time start-up: wall-clock seconds
from the command's start to its end minus R x the median round.

Usage::

    uv run python -m simulations.bench_deployment [--rounds 6] [--clients 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def settings(rounds: int, clients: int) -> list[str]:
    values = [
        "model=mlp", "hparam-hidden=[32]", "dataset=digits", f"num-clients={clients}",
        f"clients-per-round={clients}", f"rounds={rounds}", "partition=iid", "local-epochs=1",
        "local-batch-size=16", "client-lr=0.2", "fraction-evaluate=0.5",
    ]  # fmt: skip
    return [arg for value in values for arg in ("--set", value)]


def run(kind: str, rounds: int, clients: int, work: Path) -> dict[str, float]:
    if kind == "simulation":
        run_dir = work / "sim"
        args = ["simulate", "--run-dir", str(run_dir)]
    else:
        run_dir = work / kind / "run"
        args = ["deploy", "trial", "--workdir", str(work / kind)] + (["--cold"] if kind == "cold" else [])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fedmodel.cli", *args, *settings(rounds, clients)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    seconds = [d["seconds"] for d in json.loads((run_dir / "diagnostics.json").read_text())["rounds"]]
    median = statistics.median(seconds[1:])
    return {"round": median, "first": seconds[0], "wall": wall, "startup": wall - rounds * median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="repeat the three runs; medians are reported")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"simulation": [], "warm": [], "cold": []}
    for _ in range(args.repeats):
        for kind in results:
            with tempfile.TemporaryDirectory() as tmp:
                results[kind].append(run(kind, args.rounds, args.clients, Path(tmp)))
                print(f"{kind}: {results[kind][-1]}", file=sys.stderr, flush=True)
    names = {"simulation": "simulation (Ray)", "warm": "deployment, warm executor", "cold": "deployment, cold"}
    base = statistics.median(r["round"] for r in results["simulation"])
    print(f"\n{args.clients} clients, {args.rounds} rounds, mlp on digits; medians over {args.repeats} run(s)\n")
    print("| engine | s / round (rounds 2..R) | x simulation | round 1 s | start-up s | wall s |")
    print("|---|---|---|---|---|---|")
    for kind, rows in results.items():
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(
            f"| {names[kind]} | {med['round']:.2f} | {med['round'] / base:.2f} | {med['first']:.1f} | "
            f"{med['startup']:.1f} | {med['wall']:.1f} |"
        )


if __name__ == "__main__":
    main()
