"""Run reports: files written atomically from the ledger, valid PNGs, and the same epsilon as the ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dp_accounting
import pytest

from fedmodel.errors import ConfigError
from fedmodel.privacy import budget_cli
from fedmodel.privacy.accounting import AccountingError, FixedSizeSampling
from fedmodel.privacy.ledger import PrivacyLedger
from fedmodel.privacy.report import report_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Q = 64 / 5000


def central_run(root: Path, *, accuracy: bool = True, sampling: str = "poisson") -> PrivacyLedger:
    ledger = PrivacyLedger(
        unit="example", population=5000, steps_per_epoch=79, delta=1e-5, sampling=sampling, notes=["clip 1.0"]
    )  # type: ignore[arg-type]
    for epoch in range(1, 6):
        ledger.record(noise_multiplier=1.0, sampling_rate=Q, count=79, epoch=epoch)
    root.mkdir(parents=True, exist_ok=True)
    ledger.save(root)
    if accuracy:
        history = {"accuracy": [0.5, 0.6, 0.7, 0.75, 0.8], "val_accuracy": [0.55, 0.62, 0.68, 0.7, 0.72]}
        (root / "run.json").write_text(json.dumps({"history": history}))
    return ledger


def test_report_run_writes_files_with_the_ledger_epsilon(tmp_path: Path) -> None:
    ledger = central_run(tmp_path)
    written = report_run(tmp_path)
    assert set(written) == {"markdown", "json", "epsilon_plot", "accuracy_plot"}
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "privacy_ledger.json",
        "run.json",
        "privacy_report.md",
        "privacy_report.json",
        "privacy_epsilon.png",
        "privacy_accuracy.png",
    }  # and no temp files
    for key in ("epsilon_plot", "accuracy_plot"):
        data = written[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    summary = json.loads(written["json"].read_text())
    for name in ("rdp", "pld"):
        assert summary["epsilon"][name] == ledger.epsilon(accountant=name)  # type: ignore[arg-type]
        assert summary["curve"][-1]["epsilon"][name] == summary["epsilon"][name]
    assert [p["at"] for p in summary["curve"]] == [1, 2, 3, 4, 5]
    val_accuracy = [0.55, 0.62, 0.68, 0.7, 0.72]  # preferred over training accuracy
    assert [p["accuracy"] for p in summary["curve"]] == val_accuracy
    md = written["markdown"].read_text()
    for needle in ("unit of privacy**: example", "add-or-remove-one-example", "Poisson", "RdpAccountant", "**bound**"):
        assert needle in md
    assert "PLDAccountant" in md
    assert f"{ledger.epsilon(accountant='rdp'):.4f}" in md and "privacy_epsilon.png" in md


def test_federated_run_with_rounds_accuracy(tmp_path: Path) -> None:
    ledger = PrivacyLedger(unit="client", population=200, delta=1e-4, sampling="fixed-size")
    for _ in range(8):
        ledger.record(noise_multiplier=0.8, sampling_rate=0.1)
    ledger.save(tmp_path)
    rounds = [{"round": r, "accuracy": 0.1 * r} for r in range(1, 9)]
    (tmp_path / "run.json").write_text(json.dumps({"rounds": rounds}))
    written = report_run(tmp_path, accountants=("rdp",))
    summary = json.loads(written["json"].read_text())
    assert summary["unit"] == "client" and summary["curve_axis"] == "round"
    assert list(summary["epsilon"]) == ["rdp"]
    assert [p["at"] for p in summary["curve"]] == list(range(1, 9))
    assert "accuracy_plot" in written
    md = written["markdown"].read_text()
    assert "add-or-remove-one-client" in md and "fixed-size" in md and "| round |" in md
    # Poisson entries in a ledger that says the run drew a fixed number: the caveat, not the fixed-size bound
    assert "not a proven bound" in summary["sampling_assumption"] and "Poisson" in summary["bound"]


def _budget_report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from fedmodel.cli import main

    code = main(["budget", "report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fixed_size_run_reports_its_sampling_and_bound_and_no_pld(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = PrivacyLedger(unit="client", population=200, delta=1e-5, sampling="fixed-size")
    how = FixedSizeSampling(population=200, size=20)
    for rnd in range(1, 9):
        ledger.record_release(dp_accounting.GaussianDpEvent(1.5), how, epoch=rnd)
    ledger.save(tmp_path)
    written = report_run(tmp_path)  # every accountant that applies: RDP only
    summary = json.loads(written["json"].read_text())
    assert summary["accountants"] == ["rdp"] and list(summary["epsilon"]) == ["rdp"]
    assert summary["epsilon"]["rdp"] == ledger.epsilon() and summary["adjacency"].startswith("replace-one-client")
    assert "without replacement" in summary["sampling_assumption"] and "Wang et al. 2019" in summary["bound"]
    assert all(set(p["epsilon"]) == {"rdp"} for p in summary["curve"])
    md = written["markdown"].read_text()
    assert "replace-one-client" in md and "20 of 200" in md and "epsilon (pld)" not in md and "PLDAccountant" not in md
    assert written["epsilon_plot"].read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(AccountingError, match="pld does not support fixed-size sampling; use rdp"):
        report_run(tmp_path, accountants=("pld",))
    code, out, err = _budget_report([str(tmp_path), "--accountant", "pld"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("fedmodel: error: pld does not support fixed-size sampling; use rdp")
    code, out, err = _budget_report([str(tmp_path), "--format", "json"], capsys)
    assert code == 0 and list(json.loads(out)["epsilon"]) == ["rdp"]


def test_run_without_accuracy_has_no_accuracy_plot(tmp_path: Path) -> None:
    central_run(tmp_path, accuracy=False)
    written = report_run(tmp_path)
    assert set(written) == {"markdown", "json", "epsilon_plot"}
    assert not (tmp_path / "privacy_accuracy.png").exists()


def test_missing_run_dir_or_ledger_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "nope")):
        report_run(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"privacy_ledger\.json"):
        report_run(tmp_path)


def test_budget_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    ledger = central_run(tmp_path)
    parser = argparse.ArgumentParser(prog="fedmodel")
    budget_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["budget", "report", str(tmp_path), "--format", "json"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["epsilon"]["pld"] == ledger.epsilon(accountant="pld")
    assert "privacy_report.md" in err and (tmp_path / "privacy_report.md").is_file()
    args = parser.parse_args(["budget", "report", str(tmp_path)])
    assert args.func(args) == 0
    out, _ = capsys.readouterr()
    assert "Privacy report" in out and "add-or-remove-one-example" in out
    assert "matplotlib" in sys.modules  # plots were drawn in-process (Agg canvas, no pyplot)
