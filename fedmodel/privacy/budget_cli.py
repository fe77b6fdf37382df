"""The ``fedmodel budget`` subcommand: plan a privacy budget, or report on a finished run.

::

    fedmodel budget --examples 60000 --batch-size 256 --epochs 60 --noise-multiplier 1.1 --delta 1e-5
    fedmodel budget --clients 1000 --clients-per-round 50 --rounds 100 --noise-multiplier 1.0 --delta 1e-6
    fedmodel budget --clients 1000 --clients-per-round 50 --rounds 100 --client-sampling fixed-size \\
        --target-epsilon 3 --delta 1e-6
    fedmodel budget --examples 60000 --batch-size 256 --epochs 60 --target-epsilon 3 --delta 1e-5
    fedmodel budget report RUN_DIR [--format markdown]

This module imports only the standard library at import time (it is loaded for ``fedmodel --help``);
the handler imports the accounting modules (dp-accounting, never TensorFlow) when it runs.
"""

from __future__ import annotations

import argparse
import sys

from fedmodel.errors import ConfigError

_PLAN_OPTIONS = (
    "examples",
    "batch_size",
    "epochs",
    "clients",
    "clients_per_round",
    "rounds",
    "noise_multiplier",
    "target_epsilon",
    "delta",
    "client_sampling",
)
DEFAULT_DELTA = 1e-5


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``budget`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "budget",
        help="epsilon of a planned DP run, noise for a target epsilon, or a run's privacy report",
        description=(
            "Plan a DP budget (central: --examples --batch-size --epochs; federated: --clients "
            "--clients-per-round --rounds; with --noise-multiplier or --target-epsilon), or write the "
            "privacy report of a finished run: fedmodel budget report RUN_DIR. Central plans assume Poisson "
            "subsampling with q = batch_size/examples; federated plans Poisson subsampling with "
            "q = clients_per_round/clients, or, with --client-sampling fixed-size, exactly clients_per_round "
            "clients per round (replace-one-client bound, rdp only). With --target-epsilon and several "
            "accountants the smallest calibrated noise is used (the tightest valid bound)."
        ),
    )
    p.add_argument("action", nargs="?", choices=["report"], help="'report' writes a run's privacy report")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run directory holding privacy_ledger.json")
    central = p.add_argument_group("central DP-SGD (unit: one example)")
    central.add_argument("--examples", type=int, help="training examples")
    central.add_argument("--batch-size", type=int, help="expected batch size")
    central.add_argument("--epochs", type=float, help="passes over the data")
    fed = p.add_argument_group("federated DP-FedAvg (unit: one client)")
    fed.add_argument("--clients", type=int, help="client population")
    fed.add_argument("--clients-per-round", type=int, help="clients sampled per round")
    fed.add_argument("--rounds", type=int, help="training rounds")
    fed.add_argument(
        "--client-sampling",
        choices=("poisson", "fixed-size"),
        help="poisson (default): each client joins with probability q; fixed-size: exactly clients_per_round",
    )
    p.add_argument("--noise-multiplier", type=float, help="noise std / clip norm")
    p.add_argument("--target-epsilon", type=float, help="calibrate the noise multiplier for this epsilon")
    p.add_argument("--delta", type=float, help=f"delta (default {DEFAULT_DELTA:g} for a plan; a run's own delta)")
    p.add_argument("--accountant", choices=("rdp", "pld", "all"), default="all", help="default: all that apply")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="default: table")
    p.set_defaults(func=cmd_budget)


def cmd_budget(args: argparse.Namespace) -> int:
    """Run ``fedmodel budget``; bad input raises ConfigError."""
    accountants = None if args.accountant == "all" else (args.accountant,)
    if args.action == "report":
        return _report(args, accountants)
    if args.run_dir is not None:
        raise ConfigError(
            f"unexpected argument {args.run_dir!r}; to report on a run use: fedmodel budget report RUN_DIR"
        )
    from fedmodel.privacy.budget import BudgetPlan, plan_budget
    from fedmodel.privacy.report import render

    options = {name: getattr(args, name) for name in _PLAN_OPTIONS if getattr(args, name) is not None}
    if not options.keys() - {"delta", "client_sampling"}:
        raise ConfigError(
            "budget needs a plan (--examples/--batch-size/--epochs or "
            "--clients/--clients-per-round/--rounds, and --noise-multiplier or --target-epsilon), "
            "or: fedmodel budget report RUN_DIR"
        )
    options.setdefault("delta", DEFAULT_DELTA)
    epochs = options.get("epochs")
    if epochs is not None and float(epochs).is_integer():
        options["epochs"] = int(epochs)
    report = plan_budget(BudgetPlan(**options, accountants=accountants))
    for warning in report.warnings:
        print(f"fedmodel: warning: {warning}", file=sys.stderr)
    print(render(report, args.format), end="" if args.format != "json" else "\n")
    return 0


def _report(args: argparse.Namespace, accountants: tuple[str, ...] | None) -> int:
    if args.run_dir is None:
        raise ConfigError("budget report needs RUN_DIR: fedmodel budget report RUN_DIR")
    given = [f"--{n.replace('_', '-')}" for n in _PLAN_OPTIONS if n != "delta" and getattr(args, n) is not None]
    if given:
        raise ConfigError(
            f"budget report takes RUN_DIR, --delta, --accountant and --format only; got {' '.join(given)}"
        )
    from fedmodel.privacy.report import render_run, run_summary, write_run_report

    summary = run_summary(args.run_dir, delta=args.delta, accountants=accountants)  # type: ignore[arg-type]
    written = write_run_report(summary)
    for warning in summary["warnings"]:
        print(f"fedmodel: warning: {warning}", file=sys.stderr)
    print(render_run(summary, args.format), end="" if args.format != "json" else "\n")
    print("wrote " + ", ".join(str(p) for p in written.values()), file=sys.stderr)
    return 0
