"""The ``fedmodel`` command.

Subcommands import what they need when they run: ``fedmodel --help``, ``fedmodel zoo`` and
``fedmodel datasets`` never import TensorFlow. Bad input gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedmodel import __version__
from fedmodel.errors import ConfigError

EXIT_USAGE = 2


def parse_assignments(items: Sequence[str], *, flag: str, snake_case: bool = True) -> dict[str, Any]:
    """``["units=64", "hidden=(128, 64)"]`` -> ``{"units": 64, "hidden": (128, 64)}`` (Python literals).

    ``snake_case`` turns ``a-b`` keys into ``a_b`` (model hyperparameters); ``--set`` keys are kept as typed.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip().replace("-", "_") if snake_case else key.strip()] = value
    return out


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# -- zoo / datasets -------------------------------------------------------------------------------


def cmd_zoo(args: argparse.Namespace) -> int:
    from fedmodel.zoo.registry import describe_models

    rows = describe_models()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        row["params"] = f"{row['params']:,}"
    _print_table(rows, ["name", "task", "input", "params", "description"])
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from fedmodel.data import describe_datasets

    rows = describe_datasets()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    columns = list(rows[0].keys()) if rows else []
    _print_table(rows, columns)
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from fedmodel.data import (
        PartitionConfig,
        format_label_distribution,
        label_distribution,
        load_dataset,
        partition,
    )

    config = PartitionConfig(
        args.scheme,
        num_clients=args.clients,
        seed=args.seed,
        alpha=args.alpha,
        shards_per_client=args.shards_per_client,
        min_size=args.min_size,
    )
    data = load_dataset(args.dataset, path=args.data_path, seed=args.seed)
    if data.info.task != "classification" and args.scheme != "natural":
        raise ConfigError(f"label-based partition summaries need a classification dataset; {args.dataset!r} is not")
    parts = partition(config, labels=data.y_train, groups=data.groups_train)
    if data.info.task != "classification":
        sizes = [len(p) for p in parts]
        print(
            f"{len(parts)} clients; examples per client: min {min(sizes)}, "
            f"mean {sum(sizes) / len(sizes):.1f}, max {max(sizes)}"
        )
        return 0
    matrix = label_distribution(parts, data.y_train, data.info.num_classes)
    if args.format == "json":
        print(json.dumps({"clients": len(parts), "counts": matrix.tolist()}))
    else:
        print(format_label_distribution(matrix, max_rows=args.max_rows))
    if args.plot:
        from fedmodel.data import plot_label_distribution

        path = plot_label_distribution(matrix, args.plot)
        print(f"plot written to {path}", file=sys.stderr)
    return 0


# -- simulate / demo ------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> int:
    from fedmodel.federated.simulate import check_continuation, read_settings, settings_to_config
    from fedmodel.rundir import default_run_dir

    values = {**(base or {}), **read_settings(getattr(args, "config", None))}
    values.update(parse_assignments(args.set, flag="--set", snake_case=False))
    if args.run_dir:
        values["run-dir"] = args.run_dir
    config = settings_to_config(values)
    check_continuation(config)  # an existing run directory: before Ray starts or anything is written
    if config.run_dir is None:
        import dataclasses

        run_dir = default_run_dir("federated", config.model, config.dataset)
        config = dataclasses.replace(config, run_dir=str(run_dir))
    print(
        f"federated: {config.model} on {config.dataset}, {config.num_clients} clients ({config.partition}), "
        f"{config.clients_per_round} per round, {config.rounds} rounds, {config.strategy}"
        + (f", client-level DP z={config.dp_noise} clip={config.dp_clip}" if config.client_dp else "")
        + f" -> {config.run_dir}",
        file=sys.stderr,
    )
    record_path = Path(str(config.run_dir)) / "run.json"
    if getattr(args, "backend", "flower") == "tff":
        from fedmodel.federated.tff_backend import check_tff, run_tff

        check_tff(config)
        print("running on tensorflow-federated (one process; TFF starts its worker_binary)...", file=sys.stderr)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                run_tff(config, run_dir=Path(str(config.run_dir)))
        except KeyboardInterrupt:
            print("fedmodel: interrupted; the last finished round is kept, run the same command to resume",
                  file=sys.stderr)  # fmt: skip
            return 130
        return _simulation_result(args, config, record_path)
    from fedmodel.federated.simulate import SimulationFailed, SimulationInterrupted, ray_cpus, run_simulation

    print(
        f"starting {config.num_clients} simulated clients on Ray, {ray_cpus()} at a time "
        "(TensorFlow loads in each worker, so round 1 takes longer)...",
        file=sys.stderr,
        flush=True,
    )
    # The server prints each round to stderr as it ends; whatever else the apps, Flower or Ray print goes there
    # too, so that stdout holds only the result (JSON with --format json).
    try:
        with contextlib.redirect_stdout(sys.stderr):
            run_simulation(config)
    except SimulationInterrupted as stop:  # Ctrl-C or SIGTERM: Ray is gone, the last finished round is kept
        import shlex

        command = ["fedmodel", *(getattr(args, "argv", None) or ["simulate"])]
        if not args.run_dir:
            command += ["--run-dir", str(config.run_dir)]
        when = f"after round {stop.rounds_done}" if stop.rounds_done else "before round 1 finished"
        print(f"fedmodel: interrupted {when}; resume with: {shlex.join(command)}", file=sys.stderr, flush=True)
        return stop.exit_code
    except SimulationFailed as err:
        saved = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if not (saved.get("status") == "failed" or saved.get("failed_rounds")):  # those are reported below
            print(f"fedmodel: error: {err} (see the log above)", file=sys.stderr)
            return 1
    return _simulation_result(args, config, record_path)


def _simulation_result(args: argparse.Namespace, config: Any, record_path: Path) -> int:
    """Print a finished simulation's result from its run.json; the exit status."""
    if not record_path.is_file():
        print("fedmodel: error: the simulation ended without a result (see the log above)", file=sys.stderr)
        return 1
    record = json.loads(record_path.read_text())
    if args.format == "json":
        print(json.dumps({"run_dir": config.run_dir, "final": record["final"], "privacy": record["privacy"]}, indent=2))
    else:
        final = record.get("final") or {}
        if final:
            shown = ", ".join(f"{k} {_show(final[k])}" for k in ("loss", "accuracy") if final.get(k) is not None)
            print(f"final model (round {final.get('round')}): test {shown}")
        privacy = record.get("privacy") or {}
        if privacy.get("epsilon"):
            print(f"client-level DP: epsilon {_show(privacy['epsilon'])} at delta {config.delta} (unit: one client)")
        if privacy.get("local_dp"):
            worst = privacy["local_dp"]["epsilon_max_over_clients"]
            print(f"local DP-SGD: largest client epsilon {worst} at delta {config.delta} (unit: one example)")
        if not config.dp_outputs_only and config.client_dp:
            print("diagnostics.json holds values computed on client data without noise (not covered by epsilon)")
        print(f"report: {config.run_dir}/report.md")
    if record.get("status") == "failed" or record.get("failed_rounds"):
        reason = record.get("stop_reason") or f"rounds {record['failed_rounds']} had fewer replies than min-replies"
        print(f"fedmodel: the federated run failed: {reason}", file=sys.stderr)
        return 1
    if (record.get("audit") or {}).get("exceeds_claim"):
        print("fedmodel: error: the audit's lower bound exceeds the claimed epsilon", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedmodel.federated.simulate import DEMO

    args.config = None
    return cmd_simulate(args, base=DEMO)


# -- train ----------------------------------------------------------------------------------------


def _train_config(args: argparse.Namespace) -> Any:
    from fedmodel.central.config import TrainConfig

    return TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_path=args.data_path,
        hparams=parse_assignments(args.hparam, flag="--hparam"),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        l1=args.l1,
        l2=args.l2,
        schedule=args.schedule,
        decay_rate=args.decay_rate,
        decay_steps_epochs=args.decay_epochs,
        early_stopping=args.early_stopping,
        validation_fraction=args.validation_fraction,
        strategy=args.strategy,
        logical_devices=args.logical_devices,
        precision=args.precision,
        seed=args.seed,
        max_examples=args.max_examples,
        seq_len=args.seq_len,
        download=args.download,
        tensorboard=not args.no_tensorboard,
        checkpoints=not args.no_checkpoints,
        privacy=_privacy_config(args),
        dp_outputs_only=args.dp_outputs_only,
        audit_canaries=args.audit_canaries,
        audit_keep_model=not args.audit_discard_model,
    )


def _privacy_config(args: argparse.Namespace) -> Any:
    """DP-SGD settings when ``--noise-multiplier`` or ``--target-epsilon`` is given, else ``None``."""
    if args.noise_multiplier is None and args.target_epsilon is None:
        return None
    from fedmodel.privacy.config import PrivacyConfig

    return PrivacyConfig(
        l2_norm_clip=args.l2_norm_clip,
        noise_multiplier=args.noise_multiplier,
        target_epsilon=args.target_epsilon,
        delta=args.delta,
        engine=args.dp_engine,
        sampling=args.sampling,
        accountant=args.accountant,
    )


_RESUME_OPTIONS = {"resume", "format"}


def _resume_conflicts(argv: Sequence[str]) -> list[str]:
    """Training options typed together with --resume (which uses the run's saved settings), even at their defaults.

    ``argv`` is the whole command line; the train options are parsed again with every default set to None, so
    an option counts as given whatever its value (``--epochs 30`` is as much a conflict as ``--epochs 3``).
    """
    probe = _add_train(argparse.ArgumentParser(add_help=False).add_subparsers())
    probe.set_defaults(**dict.fromkeys(vars(probe.parse_args([])), None))
    given = vars(probe.parse_args(list(argv)[list(argv).index("train") + 1 :]))
    return [
        "--" + name.replace("_", "-")
        for name, value in given.items()
        if value is not None and name not in _RESUME_OPTIONS
    ]


def cmd_train(args: argparse.Namespace) -> int:
    from fedmodel.central.plan import plan_for
    from fedmodel.rundir import check_new_run_dir, default_run_dir

    if args.resume:
        conflicts = _resume_conflicts(args.argv)
        if conflicts:
            raise ConfigError(
                f"--resume continues a run with its saved settings; drop {', '.join(conflicts)} "
                f"(got them with --resume {args.resume})"
            )
        from fedmodel.central import resume

        point = resume.load(args.resume)
        config, run_dir = point.config, Path(args.resume)
        plan = plan_for(config)
        print(
            f"resuming {config.model} on {config.dataset} after epoch {point.epochs_done} of {config.epochs} "
            f"-> {run_dir}",
            file=sys.stderr,
        )
    else:
        missing = [flag for flag in ("model", "dataset") if getattr(args, flag) is None]
        if missing:
            raise ConfigError(f"train needs {' and '.join('--' + m for m in missing)} (or --resume RUN_DIR)")
        config = _train_config(args)
        plan = plan_for(config)  # all input checks, before TensorFlow or any file
        run_dir = (
            check_new_run_dir(args.run_dir) if args.run_dir else default_run_dir("train", config.model, config.dataset)
        )
        print(
            f"training {config.model} ({plan.num_params:,} params) on {plan.dataset.info.name} "
            f"({len(plan.dataset.x_train):,} train / {len(plan.dataset.x_test):,} test) -> {run_dir}",
            file=sys.stderr,
        )
        point = None
    if plan.privacy is not None:
        pp = plan.privacy
        print(
            f"DP-SGD: q={pp.sampling_rate:.5g}, {pp.planned_steps} steps, "
            f"noise multiplier {pp.noise_multiplier:.4g}"
            + (" (calibrated)" if pp.calibrated else "")
            + (f"; the budget allows {pp.max_steps} steps" if pp.budget_limited else ""),
            file=sys.stderr,
        )
        for warning in pp.warnings:
            print(f"fedmodel: warning: {warning}", file=sys.stderr)
    from fedmodel.central.trainer import train

    try:
        result = train(config, run_dir=run_dir, plan=plan, resume_from=point)
    except BaseException as err:
        _hint_resume(run_dir, err)
        raise
    if result.privacy and result.privacy["stopped_by_budget"]:
        print(
            f"stopped after {result.privacy['steps']} of {result.privacy['planned_steps']} steps: "
            "the next step "
            f"would exceed target epsilon {result.privacy['target_epsilon']}",
            file=sys.stderr,
        )
    summary = {
        "run_dir": str(result.run_dir),
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 2),
        "replicas": result.num_replicas,
        "precision": result.precision,
        **{k: v for k, v in result.metrics.items()},
    }
    if result.privacy:
        summary["epsilon"] = result.privacy["epsilon"]
        summary["delta"] = result.privacy["delta"]
        summary["dp_steps"] = result.privacy["steps"]
    if result.audit:
        summary["eps_lower"] = result.audit["epsilon_lower_bound"]
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>12}  {_show(value)}")
    if result.audit:
        print(f"audit: {result.audit['meaning']}", file=sys.stderr)
        if result.audit["exceeds_claim"]:
            print("fedmodel: error: the audit's lower bound exceeds the claimed epsilon", file=sys.stderr)
            return 1
    return 0


def _hint_resume(run_dir: Path, err: BaseException) -> None:
    """After a failed or interrupted run: say how to continue it when it left a resume point."""
    from fedmodel.central import resume

    if isinstance(err, ConfigError) or not resume.has_point(resume.partial_dir(run_dir)):
        return
    try:
        point = resume.load(run_dir)
    except ConfigError:  # an unreadable point: the original error is the one to report
        return
    print(
        f"fedmodel: the run stopped after epoch {point.epochs_done} of {point.config.epochs}; "
        f"continue it with: fedmodel train --resume {run_dir}",
        file=sys.stderr,
    )


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{_show(v)} ({k})" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e6 or value == 0 else f"{value:.3g}"
    return str(value)


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from fedmodel.central.config import OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES, TrainConfig

    defaults = TrainConfig(model="-", dataset="-")

    p = sub.add_parser(
        "train",
        help="central training of a zoo model on a dataset",
        description="Train a zoo model centrally. Example: fedmodel train --model cnn --dataset digits",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", help="zoo model name (see `fedmodel zoo`); required unless --resume")
    p.add_argument("--dataset", help="dataset name (see `fedmodel datasets`) or a .npz file; required unless --resume")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last finished epoch, with its saved settings "
        "(weights, optimizer state and privacy ledger); takes no other training options",
    )
    p.add_argument("--data-path", help="user file (npz, text) or a local copy of a Keras dataset")
    p.add_argument("--download", action="store_true", help="allow downloading a Keras dataset into its cache")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE", help="model hyperparameter")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch size")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    p.add_argument("--learning-rate", "--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="for momentum and rmsprop")
    p.add_argument("--l1", type=float, default=defaults.l1, help="L1 weight regularization")
    p.add_argument("--l2", type=float, default=defaults.l2, help="L2 weight regularization")
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule, help="learning-rate schedule")
    p.add_argument("--decay-rate", type=float, default=defaults.decay_rate)
    p.add_argument(
        "--decay-epochs",
        type=float,
        default=defaults.decay_steps_epochs,
        help="epochs per decay (exponential, step)",
    )
    p.add_argument(
        "--early-stopping",
        type=int,
        default=defaults.early_stopping,
        metavar="PATIENCE",
        help="epochs; 0 = off",
    )
    p.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    p.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy)
    p.add_argument(
        "--logical-devices",
        type=int,
        default=defaults.logical_devices,
        help="logical CPU devices for mirrored without GPUs",
    )
    p.add_argument("--precision", choices=PRECISIONS, default=defaults.precision)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--max-examples", type=int, help="cap the examples loaded (text windows)")
    p.add_argument("--seq-len", type=int, default=defaults.seq_len, help="characters per example for text datasets")
    p.add_argument("--run-dir", help="output directory (default runs/train-MODEL-DATASET-TIME)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--no-checkpoints", action="store_true")
    p.add_argument("--format", choices=("table", "json"), default="table", help="final metrics format")
    dp = p.add_argument_group(
        "differential privacy (DP-SGD)",
        "given --noise-multiplier or --target-epsilon, training is example-level DP",
    )
    dp.add_argument("--noise-multiplier", type=float, help="noise std / clip norm (e.g. 1.1)")
    dp.add_argument("--target-epsilon", type=float, help="budget; calibrates the noise when no noise is given")
    dp.add_argument("--delta", type=float, default=1e-5)
    dp.add_argument("--l2-norm-clip", type=float, default=1.0, help="per-example gradient L2 bound")
    dp.add_argument("--dp-engine", choices=("auto", "fast", "vectorized", "tfp"), default="auto")
    dp.add_argument(
        "--dp-outputs-only",
        action="store_true",
        help="write and print only what epsilon covers (no un-noised training/validation metrics, no TensorBoard)",
    )
    dp.add_argument("--sampling", choices=("poisson", "shuffle"), default="poisson")
    dp.add_argument("--accountant", choices=("rdp", "pld"), default="rdp", help="enforces --target-epsilon")
    audit = p.add_argument_group(
        "privacy audit (one run, Steinke et al. 2023)",
        "canary examples, each secretly included with probability 1/2; audit.json gets an epsilon lower bound",
    )
    audit.add_argument(
        "--audit-canaries", type=int, default=defaults.audit_canaries, metavar="N", help="canaries; 0 = no audit"
    )
    audit.add_argument(
        "--audit-discard-model",
        action="store_true",
        help="do not keep the model trained with canaries (model.keras, checkpoints): the run only measures",
    )
    p.set_defaults(func=cmd_train)
    return p


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedmodel",
        description="Federated and privacy-preserving training for TensorFlow/Keras.",
    )
    parser.add_argument("--version", action="version", version=f"fedmodel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("zoo", help="list the model zoo")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("datasets", help="list the datasets")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "partition",
        help="split a dataset among federated clients and summarize each client's labels",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-path")
    p.add_argument("--scheme", choices=("iid", "dirichlet", "shards", "quantity", "natural"), default="iid")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet, quantity)")
    p.add_argument("--shards-per-client", type=int, default=2)
    p.add_argument("--min-size", type=int, default=1, help="fewest examples a client may get")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=20, help="clients shown in the table")
    p.add_argument("--plot", metavar="PNG", help="write a per-client label-distribution plot")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_partition)

    _add_train(sub)

    p = sub.add_parser(
        "simulate",
        help="federated simulation on Flower (CONFIG.toml plus --set overrides)",
        description="Run a federated experiment on Flower's simulation engine. Settings are kebab-case keys: "
        "model, dataset, num-clients, clients-per-round, rounds, partition, alpha, local-epochs, local-batch-size, "
        "client-lr, strategy, dp-noise, dp-clip, target-epsilon, delta, ... (see simulations/*.toml).",
    )
    p.add_argument("config", nargs="?", help="TOML file with the settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--run-dir", help="output directory; an existing run directory is resumed")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--backend",
        choices=("flower", "tff"),
        default="flower",
        help="flower (default: Flower's simulation engine) or tff (tensorflow-federated, FedAvg/FedProx/FedOpt "
        "without DP; the same run directory)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="DP-FedAvg on the embedded digits with non-IID clients (a few minutes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--run-dir", help="output directory")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_demo)

    from fedmodel.audit.cli import add_parser as add_audit_parser

    add_audit_parser(sub)

    from fedmodel.deploy.cli import add_parser as add_deploy_parser

    add_deploy_parser(sub)

    from fedmodel.privacy import budget_cli

    budget_cli.register(sub)
    return parser


#: TensorFlow's C++ log threshold unless the user set one: 3 keeps only FATAL. TF 2.14 logs "Unable to register
#: cuDNN/cuFFT/cuBLAS factory" at ERROR level on import, on every machine; Python exceptions are unaffected.
TF_CPP_MIN_LOG_LEVEL = "3"


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything imports TensorFlow; set in os.environ so that Ray workers and subprocesses inherit it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_MIN_LOG_LEVEL)
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as typed (train --resume refuses any other option given)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as err:
        print(f"fedmodel: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `fedmodel budget ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("fedmodel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
