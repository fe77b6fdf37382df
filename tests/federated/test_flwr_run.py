"""`flwr run .` (Flower's own CLI, local-simulation federation) runs the same ServerApp and ClientApp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real Flower run: Ray and TensorFlow start in every actor

ROOT = Path(__file__).resolve().parents[2]


def test_flwr_run_uses_the_pyproject_app_and_writes_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    flwr = Path(sys.executable).with_name("flwr")
    proc = subprocess.run(
        [str(flwr), "run", ".", "--run-config", f"rounds=2 run-dir='{run_dir}'"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["rounds_run"] == 2
    assert record["config"]["dataset"] == "digits" and record["config"]["num_clients"] == 10
    assert record["reply_audit"]["records"] == ["arrays:arrays", "metrics:metrics"]
