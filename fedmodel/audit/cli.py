"""``fedmodel audit RUN_DIR``: membership inference on a finished run, and its audit report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_audit(args: argparse.Namespace) -> int:
    from fedmodel.errors import ConfigError

    run_dir = Path(args.run_dir)
    if not (run_dir / "run.json").is_file():
        raise ConfigError(f"{run_dir} is not a finished fedmodel run (no run.json)")
    if args.targets < 1:
        raise ConfigError(f"--targets must be >= 1, got {args.targets}")
    if args.shadows < 0:
        raise ConfigError(f"--shadows must be >= 0, got {args.shadows}")
    from fedmodel.audit.attack import load_target, membership_audit, rescore_canaries
    from fedmodel.audit.canaries import SECRET_DIR
    from fedmodel.audit.record import update_audit_file
    from fedmodel.audit.report import write_report

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    has_canaries = (run_dir / SECRET_DIR).is_dir()
    # data and model, loaded once for both audits (and not at all when there is nothing to do)
    target = load_target(run_dir) if has_canaries or not args.skip_membership else None
    one_run = rescore_canaries(run_dir, target)  # the run's own canaries, scored again on its final model
    if one_run is not None:
        update_audit_file(run_dir, "one_run", one_run)
    if not args.skip_membership:
        section = membership_audit(run_dir, targets=args.targets, shadows=args.shadows, log=log, target=target)
        update_audit_file(run_dir, "membership", section)
    report = write_report(run_dir)
    if args.format == "json":
        print(json.dumps(json.loads((run_dir / "audit.json").read_text()), indent=2))
    else:
        print(report.read_text())
    log(f"report: {report}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="membership inference (loss, LiRA) on a finished run; report beside its claimed epsilon",
        description="Attack a finished central or federated run: a loss-threshold attack and offline LiRA with "
        "shadow models trained on the run's own configuration. Runs trained with canaries get their one-run lower "
        "bound scored again from the saved canaries. Writes audit.json, audit.md and audit_roc.png into the run "
        "directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--targets", type=int, default=500, help="members attacked (and as many non-members)")
    p.add_argument("--shadows", type=int, default=4, help="LiRA shadow models (0 = loss attack only)")
    p.add_argument(
        "--skip-membership", action="store_true", help="only score the run's canaries again (no attack, no shadows)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_audit)
