"""`fedmodel audit RUN_DIR`: membership inference finds an overfit model's members; the report says what it means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmodel.cli import main
from fedmodel.data.registry import load_dataset


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-private MLP trained long on 150 digits (test accuracy far below training accuracy), with canaries."""
    data = load_dataset("digits")
    root = tmp_path_factory.mktemp("overfit")
    np.savez(root / "small.npz", x_train=data.x_train[:150], y_train=data.y_train[:150],
             x_test=data.x_test, y_test=data.y_test)  # fmt: skip
    run_dir = root / "run"
    code = main(
        ["train", "--model", "mlp", "--dataset", str(root / "small.npz"), "--epochs", "80", "--batch-size", "16",
         "--validation-fraction", "0", "--audit-canaries", "100", "--no-tensorboard", "--no-checkpoints",
         "--run-dir", str(run_dir)]
    )  # fmt: skip
    assert code == 0
    return run_dir


@pytest.mark.slow  # trains the run and two shadows (~30 s)
def test_overfit_model_members_are_found_and_the_report_says_so(
    overfit_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_run = json.loads((overfit_run / "audit.json").read_text())["one_run"]
    code = main(["audit", str(overfit_run), "--targets", "120", "--shadows", "2"])
    assert code == 0
    audit = json.loads((overfit_run / "audit.json").read_text())
    # the canaries scored again from the saved secret and model give the run's own result
    assert {k: audit["one_run"][k] for k in ("correct", "guesses", "included")} == {
        k: in_run[k] for k in ("correct", "guesses", "included")
    }
    assert audit["one_run"]["epsilon_lower_bound"] == pytest.approx(in_run["epsilon_lower_bound"], abs=1e-6)
    mia = audit["membership"]
    assert mia["targets_per_side"] == 120
    assert mia["loss"]["auc"] > 0.65  # members have near-zero loss, test examples do not (0.76-0.83 seen)
    assert mia["lira"]["auc"] > 0.6 and mia["lira"]["shadows"] == 2
    assert 0 <= mia["loss"]["tpr_at_fpr_1%"] <= 1
    assert audit["one_run"]["epsilon_lower_bound"] > 0  # the canaries are memorised too
    report = (overfit_run / "audit.md").read_text()
    assert "Claimed by the privacy ledger: none" in report
    assert "| loss threshold | " in report and "| LiRA, offline | " in report
    assert "not an epsilon bound" in report
    assert (overfit_run / "audit_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Membership inference" in capsys.readouterr().out


def test_audit_refuses_what_it_cannot_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"kind": "central", "config": {"model": "mlp", "dataset": "digits"}}))
    assert main(["audit", str(tmp_path), "--shadows", "0"]) == 2
    assert "no model.keras" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), "--targets", "0"]) == 2
    assert "--targets must be >= 1, got 0" in capsys.readouterr().err
