"""Secure aggregation with distributed DP vs central-noise DP-FedAvg at the same epsilon.

What is measured
----------------
Accuracy of the final model (held-out test set) and the ledger's epsilon (RDP, delta 1e-3) of three
settings of the demo workload (``fedmodel demo``: logistic regression on the embedded digits, Dirichlet
0.5 clients, 5 local epochs at batch 10, learning rate 0.1, clip 1.0), with every client in every round
(``clients-per-round = num-clients``) so that neither accountant gets amplification by sampling:

* ``central``: DP-FedAvg with Gaussian noise of multiplier ``--noise`` added by the server (fixed-size
  sampling, replace-one-client adjacency: the ledger charges noise multiplier ``z / 2``, no amplification
  as the cohort is everyone);
* ``secagg-same-eps``: SecAgg+ with the distributed discrete Gaussian, its noise multiplier chosen (by
  bisection on the ledger's own bound) so that its epsilon equals ``central``'s;
* ``secagg-same-noise``: SecAgg+ with ``--noise`` itself (so its epsilon is a little higher: rounding
  inflates the sensitivity and the bound counts ``m - 1`` of the ``m`` shares).

Each setting runs once per seed (the seed fixes the partition and initial model; noise and sampling come
from OS entropy). The table gives the median accuracy over seeds with every value, the epsilon, and the
median seconds per round (which includes SecAgg+'s four message exchanges).

Run ``uv run python -m simulations.bench_secagg`` (``--help``); runs go to ``runs/bench-secagg/`` and an
existing run is reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import dp_accounting

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.secagg import mechanism_for
from fedmodel.federated.shards import dataset_for
from fedmodel.privacy import accounting
from fedmodel.privacy.accounting import FixedSizeSampling
from fedmodel.zoo.registry import count_params

SETTINGS = {
    "model": "logreg",
    "dataset": "digits",
    "partition": "dirichlet",
    "alpha": 0.5,
    "local-epochs": 5,
    "local-batch-size": 10,
    "client-lr": 0.1,
    "dp-clip": 1.0,
    "delta": 1e-3,
    "client-sampling": "fixed-size",
    "fraction-evaluate": 0.0,
}


def _ledger_epsilon(event: dp_accounting.GaussianDpEvent, cohort: int, rounds: int, delta: float) -> float:
    """Epsilon as the run's ledger charges ``rounds`` releases of ``event`` to a fixed-size cohort of everyone."""
    steps = accounting.steps_event(event, FixedSizeSampling(cohort, cohort), steps=rounds)
    return accounting.epsilon(steps, delta=delta, accountant="rdp")


def calibrate(config: FederatedConfig, target: float, dim: int) -> float:
    """The secure noise multiplier whose ledger epsilon over ``config.rounds`` equals ``target``."""
    lo, hi = 0.05, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mech = mechanism_for(FederatedConfig(**{**config.to_dict(), "dp_noise": mid}), dim)
        if _ledger_epsilon(mech.event(), config.clients_per_round, config.rounds, config.delta) > target:
            lo = mid
        else:
            hi = mid
    return hi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="num-clients = clients-per-round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--noise", type=float, default=2.0, help="central DP-FedAvg's noise multiplier")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", default="runs/bench-secagg")
    args = parser.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    base = {**SETTINGS, "num-clients": args.clients, "clients-per-round": args.clients, "rounds": args.rounds}
    config = FederatedConfig.from_mapping({**base, "dp-noise": args.noise})
    data = dataset_for(config)
    dim = count_params(config.model, input_shape=data.info.input_shape, num_classes=data.info.num_classes)
    central_eps = _ledger_epsilon(dp_accounting.GaussianDpEvent(args.noise), args.clients, args.rounds, config.delta)
    secure = FederatedConfig.from_mapping({**base, "dp-noise": args.noise, "secure-aggregation": True})
    same_eps_noise = calibrate(secure, central_eps, dim)
    runs = {
        "central": {"dp-noise": args.noise},
        "secagg-same-eps": {"dp-noise": round(same_eps_noise, 4), "secure-aggregation": "true"},
        "secagg-same-noise": {"dp-noise": args.noise, "secure-aggregation": "true"},
    }
    rows = []
    for name, extra in runs.items():
        accuracies, epsilons, seconds = [], [], []
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            run_dir = root / f"{name}-seed{seed}"
            if (
                not (run_dir / "run.json").is_file()
                or json.loads((run_dir / "run.json").read_text())["status"] != "completed"
            ):
                settings = {**base, **extra, "seed": seed, "run-dir": str(run_dir)}
                cmd = ["uv", "run", "fedmodel", "simulate"]
                for key, value in settings.items():
                    cmd += ["--set", f"{key}={value}"]
                print("$", shlex.join(cmd), file=sys.stderr, flush=True)
                with open(root / f"{name}-seed{seed}.log", "w") as log:
                    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
            record = json.loads((run_dir / "run.json").read_text())
            diagnostics = json.loads((run_dir / "diagnostics.json").read_text())["rounds"]
            accuracies.append(record["test_metrics"]["accuracy"])
            epsilons.append(record["privacy"]["epsilon"]["rdp"])
            seconds.append(statistics.median(d["seconds"] for d in diagnostics[1:] or diagnostics))
        rows.append((name, extra["dp-noise"], statistics.median(epsilons), accuracies, statistics.median(seconds)))
    print(
        f"\n{args.clients} clients, all in every round, {args.rounds} rounds, delta {config.delta}; "
        f"model dimension {dim}\n"
    )
    print("| setting | noise multiplier | epsilon (ledger, RDP) | accuracy median | per seed | s / round |")
    print("|---|---|---|---|---|---|")
    for name, z, eps, accs, secs in rows:
        per_seed = ", ".join(f"{a:.3f}" for a in accs)
        print(f"| {name} | {z:.4f} | {eps:.3f} | {statistics.median(accs):.3f} | {per_seed} | {secs:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
