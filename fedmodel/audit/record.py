"""``audit.json``: the one-run lower bound of a run beside the epsilon its ledger claims, in words too.

Shared by central runs (example canaries) and federated runs (client canaries); ``fedmodel audit``
adds membership inference to the same file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedmodel.audit import onerun
from fedmodel.audit.canaries import ExampleCanaries, example_canaries
from fedmodel.rundir import write_json

AUDIT_FILE = "audit.json"

#: How example canaries are scored (higher = more likely included).
LOSS_SCORE = "-loss of the canary's label"

#: Delta of the lower bound for a run without DP (it claims nothing; any small delta will do).
NON_PRIVATE_DELTA = 1e-5


def tightest_claim(epsilons: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The smallest finite epsilon any accountant of the run reports, and which one (the claim to test).

    A run that prints RDP and PLD figures claims the smaller one too, so a bound between them refutes it.
    """
    numbers = {name: float(v) for name, v in epsilons.items() if isinstance(v, int | float) and math.isfinite(float(v))}
    if not numbers:
        return None, None
    name = min(numbers, key=lambda n: numbers[n])
    return numbers[name], name


def example_canaries_for(
    run_dir: Path, n: int, *, x_train: np.ndarray, y_train: np.ndarray, num_classes: int
) -> ExampleCanaries:
    """The run's canaries: loaded from ``run_dir`` when it has them (a resumed run), else drawn and saved."""
    path = Path(run_dir) / "audit" / "example_canaries.npz"
    if path.exists():
        canaries = ExampleCanaries.load(run_dir)
        if len(canaries.x) != n:
            raise ValueError(f"{path} holds {len(canaries.x)} canaries, the run asks for {n}")
        return canaries
    canaries = example_canaries(n, x_like=x_train, y_like=y_train, num_classes=num_classes)
    canaries.save(run_dir)
    return canaries


def meaning(audit: onerun.OneRunAudit, claimed: float | None) -> str:
    """One sentence on what the figures mean."""
    conf = f"{audit.confidence:.0%}"
    bound = audit.epsilon_lower_bound
    if claimed is None or not math.isfinite(claimed):
        head = "The run claims no differential privacy"
    else:
        head = f"The run claims epsilon {claimed:.3g} at delta {audit.delta:g}"
    if bound <= 0:
        weight = 2 * audit.canaries * audit.delta  # the delta term's factor in the p-value
        why = (
            f"; with delta {audit.delta:g} and {audit.canaries} canaries the delta term (2 m delta = {weight:.2g}) "
            "dominates: more canaries or a smaller delta make the audit sharper"
            if weight >= 0.1
            else ""
        )
        return (
            f"{head}; {audit.correct} of {audit.guesses} guesses right do not refute even epsilon 0 at {conf} "
            f"confidence{why} (an audit gives a lower bound, so this does not prove privacy)."
        )
    tail = (
        "consistent with the claim (the true epsilon lies between the two)"
        if claimed is not None and math.isfinite(claimed) and bound <= claimed
        else "so the claim is refuted: a privacy bug"
        if claimed is not None and math.isfinite(claimed)
        else "measured leakage of a non-private model"
    )
    return (
        f"{head}; with {conf} confidence an attacker who guessed {audit.correct} of {audit.guesses} canaries right "
        f"shows the run is not ({bound:.3g}, {audit.delta:g})-DP for any smaller epsilon, {tail}."
    )


def one_run_record(
    audit: onerun.OneRunAudit,
    *,
    unit: str,
    claimed_epsilon: float | None,
    accountant: str | None,
    score: str,
) -> dict[str, Any]:
    """The ``one_run`` section of ``audit.json``."""
    claimed = None if claimed_epsilon is None or not math.isfinite(claimed_epsilon) else float(claimed_epsilon)
    return {
        "method": "one-run (Steinke, Nasr & Jagielski 2023)",
        "unit": unit,
        "score": score,
        "claimed_epsilon": claimed,
        "claimed_by": accountant,
        "exceeds_claim": claimed is not None and audit.epsilon_lower_bound > claimed,
        **audit.to_dict(),
        "meaning": meaning(audit, claimed),
    }


def update_audit_file(run_dir: Path, section: str, record: dict[str, Any]) -> Path:
    """Set ``section`` of ``run_dir/audit.json`` (created if missing), keeping the other sections."""
    path = Path(run_dir) / AUDIT_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = record
    return write_json(path, data)
