"""The federated run's report.md: the run, with its plots linked; the privacy accounting in privacy_report.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fedmodel.federated.report import write_report
from fedmodel.privacy.ledger import PrivacyLedger

DELTA = 1e-3
LINK = re.compile(r"\]\(([^)]+)\)")  # Markdown links and images: [text](target), ![alt](target)


def federated_run(run: Path, *, client_dp: bool) -> None:
    """A run directory as a 2-round federated run leaves it: run.json, diagnostics.json, the ledger with DP."""
    rows = [
        {"round": 1, "loss": 2.0, "accuracy": 0.4, "sampled": 3},
        {"round": 2, "loss": 1.5, "accuracy": 0.6, "sampled": 2},
    ]
    privacy = None
    if client_dp:
        ledger = PrivacyLedger(unit="client", population=6, sampling="poisson", delta=DELTA, notes=["dp-clip 1.0"])
        for rnd, row in enumerate(rows, start=1):
            ledger.record(noise_multiplier=1.0, sampling_rate=0.5, epoch=rnd)
            row.update(epsilon=ledger.epsilon(DELTA, "rdp"), clip=1.0)
        ledger.save(run)
        privacy = {
            "epsilon": {"rdp": rows[-1]["epsilon"]},
            "delta": DELTA,
            "rounds": 2,
            "adjacency": "add-or-remove-one-client",
            "bound": "Poisson-subsampled Gaussian",
        }
    config = {"model": "logreg", "dataset": "digits", "num_clients": 6, "clients_per_round": 3, "partition": "iid"}
    record = {"kind": "federated", "config": config, "rounds_run": 2, "rounds": rows, "privacy": privacy}
    (run / "run.json").write_text(json.dumps(record))
    diagnostics = [{"round": r, "replies": 3, "fed_accuracy": 0.5} for r in (1, 2)]
    (run / "diagnostics.json").write_text(json.dumps({"note": "not covered", "rounds": diagnostics}))


def test_report_links_its_plots_and_the_privacy_report_and_repeats_no_section(tmp_path: Path) -> None:
    federated_run(tmp_path, client_dp=True)
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "![test accuracy per round](accuracy.png)" in report
    assert "![epsilon per round](epsilon.png)" in report
    assert "[privacy_report.md](privacy_report.md)" in report
    targets = LINK.findall(report)
    assert set(targets) == {"accuracy.png", "epsilon.png", "privacy_report.md"}
    assert all((tmp_path / target).is_file() for target in targets)  # relative links that resolve in the run
    privacy = (tmp_path / "privacy_report.md").read_text()
    headings = {line for line in report.splitlines() if line.startswith("#")}
    assert headings.isdisjoint(line for line in privacy.splitlines() if line.startswith("#"))
    # The accounting facts are stated once, in the privacy report.
    assert "add-or-remove-one-client" in privacy and "add-or-remove" not in report
    assert "Poisson" in privacy and "Poisson" not in report


def test_report_without_a_ledger_links_only_what_exists(tmp_path: Path) -> None:
    federated_run(tmp_path, client_dp=False)
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert LINK.findall(report) == ["accuracy.png"]
    assert (tmp_path / "accuracy.png").is_file() and not (tmp_path / "privacy_report.md").exists()
