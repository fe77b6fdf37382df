"""One-run audits of central training: leakage found where there is some, never above a DP claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmodel.audit.canaries import ExampleCanaries, example_canaries
from fedmodel.central.config import TrainConfig
from fedmodel.central.plan import plan_for
from fedmodel.errors import ConfigError
from fedmodel.privacy.config import PrivacyConfig


def _train(config: TrainConfig, run_dir: Path) -> dict:
    from fedmodel.central.trainer import train

    train(config, run_dir=run_dir)
    return json.loads((run_dir / "run.json").read_text())


def test_canaries_are_secret_and_shaped_like_the_data() -> None:
    x = np.random.default_rng(0).uniform(0, 16, size=(50, 8, 8, 1)).astype(np.float32)
    y = np.arange(50) % 10
    a = example_canaries(300, x_like=x, y_like=y, num_classes=10)
    b = example_canaries(300, x_like=x, y_like=y, num_classes=10)
    assert a.x.shape == (300, 8, 8, 1) and a.x.dtype == np.float32 and a.y.shape == (300,)
    assert a.x.min() >= 0 and a.x.max() <= 16 and set(np.unique(a.y)) <= set(range(10))
    # no seed reaches the draw: two draws differ in inputs and coins (1 in 2^300 to agree by chance)
    assert not np.array_equal(a.included, b.included)
    assert not np.allclose(a.x, b.x)
    assert 100 < a.included.sum() < 200  # fair coins


def test_canaries_round_trip(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.int32).reshape(4, 10)
    c = example_canaries(20, x_like=x, y_like=x, num_classes=40)
    assert np.issubdtype(c.x.dtype, np.integer) and c.y.shape == (20, 10)
    c.save(tmp_path)
    back = ExampleCanaries.load(tmp_path)
    assert np.array_equal(back.x, c.x) and np.array_equal(back.y, c.y) and np.array_equal(back.included, c.included)
    assert "secret" in (tmp_path / "audit" / "example_canaries.json").read_text()


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="audit_canaries must be an integer >= 0, got -1"):
        TrainConfig(model="mlp", dataset="digits", audit_canaries=-1)
    with pytest.raises(ConfigError, match="single-process"):
        TrainConfig(model="mlp", dataset="digits", audit_canaries=10, strategy="multi-worker")


@pytest.fixture(scope="module")
def non_private_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    config = TrainConfig(
        model="mlp", dataset="digits", epochs=30, audit_canaries=200, tensorboard=False, audit_keep_model=False
    )
    run_dir = tmp_path_factory.mktemp("audit") / "non-private"
    return run_dir, _train(config, run_dir)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("audit") / "dp"
    return run_dir, _train(DP_CONFIG, run_dir)


DP_BASE = TrainConfig(
    model="mlp",
    dataset="digits",
    epochs=5,
    batch_size=64,
    learning_rate=0.01,
    privacy=PrivacyConfig(target_epsilon=1.0, delta=1e-5, l2_norm_clip=1.0),
    tensorboard=False,
)
DP_CONFIG = TrainConfig(**{**DP_BASE.__dict__, "audit_canaries": 200})


def test_non_private_overfit_model_leaks(non_private_run: tuple[Path, dict]) -> None:
    run_dir, record = non_private_run
    audit = record["audit"]
    assert audit["claimed_epsilon"] is None
    assert audit["epsilon_lower_bound"] > 1.0  # an MLP memorises random canaries
    assert audit["correct"] / audit["guesses"] > 0.9
    saved = json.loads((run_dir / "audit.json").read_text())["one_run"]
    assert saved == audit
    # the test metrics are on the held-out test split only (canaries never reach it)
    assert record["metrics"]["examples"] == record["dataset"]["test_examples"]
    assert not (run_dir / "model.keras").exists()  # audit_keep_model=False
    assert not (run_dir / "checkpoints").exists()


def test_two_runs_with_the_same_seed_draw_different_canaries(
    non_private_run: tuple[Path, dict], dp_run: tuple[Path, dict]
) -> None:
    # both runs have --seed 0 and 200 canaries: a draw that followed the seed would repeat itself
    first, second = (ExampleCanaries.load(run_dir) for run_dir, _ in (non_private_run, dp_run))
    assert non_private_run[1]["config"]["seed"] == dp_run[1]["config"]["seed"] == 0
    assert not np.array_equal(first.included, second.included)
    assert not np.allclose(first.x, second.x)


def test_dp_run_bound_stays_below_its_claim_and_accounting_is_unchanged(dp_run: tuple[Path, dict]) -> None:
    _, record = dp_run
    audit = record["audit"]
    epsilons = record["privacy"]["epsilon"]
    assert epsilons["rdp"] == pytest.approx(1.0, abs=0.05)
    # the claim tested is the smallest figure the run reports (PLD is tighter than RDP here)
    claimed = min(epsilons["rdp"], epsilons["pld"])
    assert audit["claimed_epsilon"] == claimed and audit["claimed_by"] == min(epsilons, key=epsilons.get)
    assert 0 <= audit["epsilon_lower_bound"] <= claimed
    assert not audit["exceeds_claim"]
    # canaries are extra examples: the sampling rate, noise and steps of the real examples are the plan's
    plan = plan_for(DP_BASE).privacy
    assert plan is not None
    assert record["privacy"]["sampling_rate"] == plan.sampling_rate
    assert record["privacy"]["noise_multiplier"] == pytest.approx(plan.noise_multiplier)
    assert record["privacy"]["steps"] == plan.planned_steps
    assert any("audit.json" in line for line in record["outputs"]["covered_by_epsilon"])
