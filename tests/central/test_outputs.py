"""What a central DP run writes, split by what its epsilon covers (docs/privacy.md lists every output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedmodel.central.config import TrainConfig
from fedmodel.central.trainer import train
from fedmodel.errors import ConfigError
from fedmodel.privacy.config import PrivacyConfig

ROOT = Path(__file__).resolve().parents[2]
DP = PrivacyConfig(noise_multiplier=1.0, delta=1e-4)


def test_dp_run_keeps_uncovered_metrics_out_of_run_json_and_picks_no_checkpoint_by_training_loss(
    tmp_path: Path,
) -> None:
    config = TrainConfig(
        model="logreg", dataset="synthetic", epochs=2, batch_size=100, privacy=DP,
        validation_fraction=0.0, tensorboard=False,
    )  # fmt: skip
    train(config, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    record = json.loads((run / "run.json").read_text())
    assert set(record["history"]) == {"epsilon"}
    diagnostics = json.loads((run / "diagnostics.json").read_text())
    assert diagnostics["covered_by_privacy_ledger"] is False
    assert {"loss", "accuracy", "clipped"} <= set(diagnostics["history"])
    # No validation split: the final model is kept; nothing is chosen by un-noised training loss.
    assert not (run / "checkpoints" / "best.weights.h5").exists()
    assert any("diagnostics.json" in item for item in record["outputs"]["not_covered"])


def test_non_private_runs_keep_the_whole_history_and_the_best_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(model="logreg", dataset="synthetic", epochs=2, batch_size=100, tensorboard=False)
    train(config, run_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"loss", "val_loss"} <= set(record["history"])
    assert (tmp_path / "run" / "checkpoints" / "best.weights.h5").is_file()
    assert not (tmp_path / "run" / "diagnostics.json").exists()


def test_dp_outputs_only_writes_and_prints_only_what_epsilon_covers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "fedmodel.cli", "train", "--model", "logreg", "--dataset", "synthetic",
            "--epochs", "2", "--batch-size", "100", "--noise-multiplier", "1.0", "--delta", "1e-4",
            "--dp-outputs-only", "--run-dir", str(run)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=_env() | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    epoch_lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("epsilon" in line and "loss" not in line for line in epoch_lines)
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert files == {"model.keras", "run.json", "privacy_ledger.json"}, files
    record = json.loads((run / "run.json").read_text())
    assert set(record["history"]) == {"epsilon"} and record["outputs"]["not_covered"] == []


def test_dp_outputs_only_refuses_what_it_would_have_to_hide() -> None:
    with pytest.raises(ConfigError, match="dp_outputs_only needs DP-SGD"):
        TrainConfig(model="logreg", dataset="digits", dp_outputs_only=True)
    with pytest.raises(ConfigError, match="early_stopping selects on validation loss"):
        TrainConfig(model="logreg", dataset="digits", privacy=DP, dp_outputs_only=True, early_stopping=3)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
