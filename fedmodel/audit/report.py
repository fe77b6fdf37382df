"""``audit.md``: a run's claimed epsilon beside what the audits measured, readable by a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmodel.atomic import atomic_write
from fedmodel.audit.record import AUDIT_FILE, tightest_claim

REPORT_FILE = "audit.md"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if isinstance(value, int | float) else "-"


def claimed_epsilon(record: dict[str, Any]) -> tuple[float | None, float | None, str | None]:
    """(epsilon, delta, accountant) the run's ledger claims, from ``run.json``: the smallest figure it reports."""
    privacy = record.get("privacy") or {}
    value, accountant = tightest_claim(privacy.get("epsilon") or {})
    return value, privacy.get("delta"), accountant


def render(run_dir: Path) -> str:
    """The report text for ``run_dir`` (its ``run.json`` and ``audit.json``)."""
    record = json.loads((run_dir / "run.json").read_text())
    audit = json.loads((run_dir / AUDIT_FILE).read_text()) if (run_dir / AUDIT_FILE).exists() else {}
    eps, delta, accountant = claimed_epsilon(record)
    unit = "client" if record.get("kind") == "federated" else "example"
    lines = [f"# Privacy audit of {run_dir.name}", ""]
    claim = f"epsilon {_num(eps)} at delta {delta:g} ({accountant}, unit: one {unit})" if eps is not None else "none"
    lines += [f"- Claimed by the privacy ledger: {claim}"]
    one = audit.get("one_run")
    if one:
        lines += [
            f"- Empirical lower bound (one run, {one['canaries']} canary {unit}s, {one['confidence']:.0%} confidence): "
            f"epsilon >= {_num(one['epsilon_lower_bound'])} at delta {one['delta']:g} "
            f"({one['correct']} of {one['guesses']} guesses right)",
            "",
            one["meaning"],
        ]
        if one.get("exceeds_claim"):
            lines += ["", "**The lower bound exceeds the claim: the DP implementation or its accounting is wrong.**"]
    else:
        lines += [
            "- Empirical lower bound: none (train with `--audit-canaries N`, or simulate with "
            "`--set audit-canaries=N`, for a one-run bound)"
        ]
    mia = audit.get("membership")
    if mia:
        lines += [
            "",
            "## Membership inference",
            "",
            f"{mia['targets_per_side']} members ({mia['members']}) against as many non-members ({mia['nonmembers']}).",
            "",
            "| attack | AUC | TPR at 0.1% FPR | TPR at 1% FPR | advantage |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, key in (("loss threshold", "loss"), ("LiRA, offline", "lira")):
            row = mia.get(key)
            if row:
                lines.append(
                    f"| {name} | {row['auc']:.3f} | {row['tpr_at_fpr_0.1%']:.4f} | {row['tpr_at_fpr_1%']:.4f} | "
                    f"{row['advantage']:.3f} |"
                )
        if "lira" in mia:
            lines += ["", f"LiRA shadows: {mia['lira']['shadows']}, trained on {mia['shadow_training']}."]
        lines += [
            "",
            "AUC 0.5 and TPR equal to FPR mean the attack does no better than guessing. These figures measure "
            "leakage on real examples but are not an epsilon bound: which examples trained was not decided by "
            "a secret coin per example.",
            "",
            f"![ROC]({mia['roc_plot']})",
        ]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path) -> Path:
    return atomic_write(Path(run_dir) / REPORT_FILE, render(Path(run_dir)))
