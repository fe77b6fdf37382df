"""End-to-end federated runs on Flower's real simulation engine (Ray), with the real ServerApp/ClientApp.

One DP-FedAvg run with a client that always fails, then a restart of the same run directory that resumes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two real Flower simulations (Ray + TensorFlow in every actor): minutes

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [
    "model=mlp", "hparam-hidden=[32]", "dataset=digits", "num-clients=6", "clients-per-round=3",
    "partition=iid", "local-epochs=2", "local-batch-size=16", "client-lr=0.2",
    "dp-noise=0.01", "dp-clip=2.0", "delta=1e-3", "fail-partitions=4", "fraction-evaluate=0.5",
    "min-replies=0",  # a round that sampled only the failing client still counts (the model is unchanged)
]  # fmt: skip


def simulate(run_dir: Path, rounds: int) -> dict[str, object]:
    args = [sys.executable, "-m", "fedmodel.cli", "simulate", "--run-dir", str(run_dir), "--format", "json"]
    for setting in [*SETTINGS, f"rounds={rounds}"]:
        args += ["--set", setting]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("fed") / "run"
    simulate(run_dir, rounds=3)
    first_record = json.loads((run_dir / "run.json").read_text())
    simulate(run_dir, rounds=5)  # restart: resumes after round 3
    return run_dir, first_record, json.loads((run_dir / "run.json").read_text())


def test_accuracy_improves_and_a_failing_client_does_not_stop_the_run(runs: tuple) -> None:  # type: ignore[type-arg]
    run_dir, first, second = runs
    rounds = first["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    # Client sampling draws from OS entropy (it must not follow --seed), so which clients train in which round,
    # and so the curve, differs between runs. Over five rounds the model must still learn: the loss falls and the
    # accuracy ends far above chance (0.1 on ten digits; a centrally trained MLP reaches about 0.95).
    trained = second["rounds"]
    assert trained[-1]["loss"] < trained[0]["loss"]
    assert trained[-1]["accuracy"] > 0.75
    # Poisson client sampling: every sampled client either replied or failed (partition 4 always raises,
    # and whenever it is sampled the round goes on with the others). Replies live in the diagnostics.
    diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
    assert diagnostics["covered_by_privacy_ledger"] is False
    replied = [d["replies"] + d["failures"] for d in diagnostics["rounds"][:3]]
    assert replied == [r["sampled"] for r in rounds]
    assert not {"replies", "train_loss", "fed_accuracy"} & {k for r in rounds for k in r}


def test_server_receives_only_weight_shaped_arrays_counts_and_metrics(runs: tuple) -> None:  # type: ignore[type-arg]
    _, first, _ = runs
    audit = first["reply_audit"]
    assert audit["records"] == ["arrays:arrays", "metrics:metrics"]
    assert set(audit["metrics"]) <= {"num-examples", "train_loss", "train_accuracy", "local-epsilon"}
    diagnostics = json.loads((runs[0] / "diagnostics.json").read_text())
    assert diagnostics["rejected_replies"] == 0
    # The arrays are the model's weights: an MLP 64 -> 32 -> 10 has exactly these shapes.
    assert audit["weight_shapes"] == [[64, 32], [32], [32, 10], [10]]


def test_ledger_matches_fedmodel_budget_for_the_same_schedule(runs: tuple) -> None:  # type: ignore[type-arg]
    _, first, _ = runs
    proc = subprocess.run(
        [sys.executable, "-m", "fedmodel.cli", "budget", "--clients", "6", "--clients-per-round", "3", "--rounds", "3",
         "--noise-multiplier", "0.01", "--delta", "1e-3", "--accountant", "rdp", "--format", "json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    budget = json.loads(proc.stdout)
    assert first["privacy"]["rounds"] == 3 and first["privacy"]["sampling"] == "poisson"
    assert first["privacy"]["epsilon"]["rdp"] == pytest.approx(budget["epsilon"]["rdp"], rel=1e-9)
    # Noise 0.01 is far too small for a PLD grid at 1e-4: the run says so instead of running out of memory.
    assert str(first["privacy"]["epsilon"]["pld"]).startswith("n/a: the pld accountant would need")


def test_restart_resumes_the_round_count_and_the_ledger(runs: tuple) -> None:  # type: ignore[type-arg]
    run_dir, first, second = runs
    assert [r["round"] for r in second["rounds"]] == [1, 2, 3, 4, 5]
    assert second["rounds"][:3] == first["rounds"]
    assert second["privacy"]["rounds"] == 5
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    assert sum(e["count"] for e in ledger["entries"]) == 5
    assert all(math.isfinite(r["accuracy"]) for r in second["rounds"])
    for name in ("report.md", "report.json", "accuracy.png", "epsilon.png", "privacy_report.md", "diagnostics.json"):
        assert (run_dir / name).is_file(), name
    assert "NOT covered by epsilon" in (run_dir / "report.md").read_text()


def test_dp_outputs_only_writes_and_prints_nothing_the_ledger_does_not_cover(tmp_path: Path) -> None:
    run_dir = tmp_path / "private"
    args = [sys.executable, "-m", "fedmodel.cli", "simulate", "--run-dir", str(run_dir)]
    for setting in [*SETTINGS, "rounds=2", "dp-outputs-only=true", "fail-partitions="]:
        args += ["--set", setting]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (run_dir / "diagnostics.json").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["outputs"]["dp_outputs_only"] is True and record["outputs"]["not_covered"] == []
    allowed = {"round", "loss", "accuracy", "epsilon", "clip", "sampled"}
    assert {k for r in record["rounds"] for k in r} <= allowed
    assert "not DP" not in proc.stderr + proc.stdout
    assert "train_loss" not in (run_dir / "report.md").read_text()


def test_a_round_without_usable_replies_fails_the_run_and_leaves_the_model_unchanged(tmp_path: Path) -> None:
    run_dir = tmp_path / "failing"
    args = [sys.executable, "-m", "fedmodel.cli", "simulate", "--run-dir", str(run_dir)]
    settings = [s for s in SETTINGS if not s.startswith(("dp-", "delta", "fail-partitions", "min-replies"))]
    for setting in [*settings, "rounds=1", "fail-partitions=0,1,2,3,4,5", "fraction-evaluate=0"]:
        args += ["--set", setting]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "the federated run failed" in proc.stderr and "min-replies" in proc.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["failed_rounds"] == [1] and record["rounds"][0]["failed"] is True
    diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
    assert diagnostics["rounds"][0]["failure_codes"] == {"fault-injection": 3}
