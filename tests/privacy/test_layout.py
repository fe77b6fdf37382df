"""The privacy package's layout: accounting and reporting stay TensorFlow-free; the engine is apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fedmodel.privacy

TF_FREE = (
    "accounting",
    "gaussian",
    "rdp_repair",
    "ledger",
    "calibration",
    "budget",
    "budget_cli",
    "report",
    "dp_plan",
    "config",
    "sampling_math",
    "mechanism",
    "randomness",
    "discrete_gaussian",
    "distributed_dp",
)
ENGINE = ("dpsgd", "taps", "per_example", "recurrent", "vectorized", "batches")


def _imports_tensorflow(modules: list[str]) -> bool:
    code = f"import sys; import {', '.join(modules)}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_privacy_modules_do_not_import_tensorflow() -> None:
    assert not _imports_tensorflow([f"fedmodel.privacy.{name}" for name in TF_FREE] + ["fedmodel.privacy.engine"])


def test_engine_modules_import_tensorflow() -> None:
    # the check above would pass vacuously if the subprocess could not see TensorFlow at all
    assert _imports_tensorflow(["fedmodel.privacy.engine.batches"])


def test_package_holds_exactly_the_listed_modules() -> None:
    root = Path(fedmodel.privacy.__file__).parent
    assert {p.stem for p in root.glob("*.py")} - {"__init__"} == set(TF_FREE)
    assert {p.stem for p in (root / "engine").glob("*.py")} - {"__init__"} == set(ENGINE)
