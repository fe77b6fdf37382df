"""Utility of federated training: central vs FedAvg (IID, non-IID) vs DP-FedAvg, on digits and mnist5k.

Every federated row is a real ``fedmodel simulate`` run (Flower simulation engine, the same
ServerApp/ClientApp as a deployment); the central row is ``fedmodel train`` of the same model on the same
training examples. Prints a Markdown table and the command of every row.

    uv run python -m simulations.utility_federated [--datasets digits,mnist5k] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

COMMON = {
    "model": "mlp",
    "hparam-hidden": "[200, 200]",
    "num-clients": 100,
    "clients-per-round": 10,
    "local-epochs": 5,
    "local-batch-size": 10,
    "client-lr": 0.05,
    "fraction-evaluate": 0.0,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "FedAvg IID": {"partition": "iid"},
    "FedAvg non-IID (Dirichlet 0.3)": {"partition": "dirichlet", "alpha": 0.3},
    "DP-FedAvg non-IID (z=1.0, clip 1.0)": {
        "partition": "dirichlet",
        "alpha": 0.3,
        "clients-per-round": 50,
        "dp-noise": 1.0,
        "dp-clip": 1.0,
        "delta": 1e-3,
        "client-lr": 0.1,
    },
}


def run(args: list[str]) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedmodel.cli", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fedmodel {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist5k")
    parser.add_argument("--rounds", type=int, default=30)
    opts = parser.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in opts.datasets.split(","):
            central = ["train", "--model", "mlp", "--hparam", "hidden=(200, 200)", "--dataset", dataset,
                       "--validation-fraction", "0", "--format", "json", "--no-tensorboard", "--no-checkpoints",
                       "--run-dir", f"{tmp}/{dataset}-central"]  # fmt: skip
            result, seconds = run(central)
            commands.append("fedmodel " + " ".join(a if " " not in a else repr(a) for a in central[:-2]))
            rows.append((dataset, "central (fedmodel train, defaults)", result["accuracy"], None, seconds))
            for name, overrides in SETTINGS.items():
                settings = {**COMMON, "dataset": dataset, "rounds": opts.rounds, **overrides}
                sim = ["simulate", "--format", "json", "--run-dir", f"{tmp}/{dataset}-{len(rows)}"]
                for key, value in settings.items():
                    sim += ["--set", f"{key}={value}"]
                result, seconds = run(sim)
                final = result["final"]
                privacy = result.get("privacy") or {}
                eps = privacy.get("epsilon", {}).get("rdp") if privacy else None
                commands.append("fedmodel " + " ".join(sim[:1] + [repr(a) if " " in a else a for a in sim[5:]]))
                rows.append((dataset, name, final["accuracy"], eps, seconds))
    print("| dataset | setting | test accuracy | epsilon (RDP, client) | wall s |")
    print("|---|---|---|---|---|")
    for dataset, name, acc, eps, seconds in rows:
        shown = f"{eps:.2f}" if eps is not None else "-"
        print(f"| {dataset} | {name} | {acc:.4f} | {shown} | {seconds:.0f} |")
    print()
    for command in commands:
        print(f"    {command}")


if __name__ == "__main__":
    main()
