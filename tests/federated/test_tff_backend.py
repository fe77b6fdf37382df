"""The tensorflow-federated backend: parity with the Flower path's training, run directory, no child left.

TFF runs in a subprocess (``fedmodel simulate --backend tff``): building TFF's process invalidates Keras
models made earlier in the same process, which would break the cached trainers of other tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.tff_backend import check_tff

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "model": "mlp",
    "hparam-hidden": "[32]",
    "dataset": "digits",
    "num-clients": 4,
    "clients-per-round": 4,
    "rounds": 3,
    "local-epochs": 2,
    "local-batch-size": 16,
    "client-lr": 0.05,
    "fraction-evaluate": 0.0,
}


def _command(run_dir: Path, **extra: object) -> list[str]:
    args = [sys.executable, "-m", "fedmodel.cli", "simulate", "--backend", "tff", "--run-dir", str(run_dir)]
    for key, value in {**SETTINGS, **extra}.items():
        args += ["--set", f"{key}={value}"]
    return args


def _workers_since(start: float) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "create_time"]):
        if proc.info["name"] == "worker_binary" and proc.info["create_time"] >= start - 1:
            found.append(proc)
    return found


def _flower_fedavg(config: FederatedConfig) -> list[np.ndarray]:
    """What the Flower path computes: each client's LocalTrainer.fit, then FedAvg weighted by examples."""
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.shards import client_shard, dataset_for

    info = dataset_for(config).info
    trainer = trainer_for(
        TrainerKey.of(config, input_shape=info.input_shape, num_classes=info.num_classes, proximal_mu=0.0)
    )
    weights = trainer.model.get_weights()
    for rnd in range(1, config.rounds + 1):
        updates, sizes = [], []
        for pid in range(config.num_clients):
            shard = client_shard(config, pid)
            new, _ = trainer.fit(weights, shard, epochs=config.local_epochs, seed=hash((config.seed, pid, rnd)) % 2**31)
            updates.append(new)
            sizes.append(len(shard.x_train))
        weights = [sum(n * u[i] for n, u in zip(sizes, updates, strict=True)) / sum(sizes) for i in range(len(weights))]
    return weights


@pytest.mark.slow
def test_tff_backend_matches_the_flower_training_and_leaves_no_worker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    start = time.time()
    proc = subprocess.run(
        _command(run_dir), capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "stopped TFF's child processes: worker_binary" in proc.stderr
    assert _workers_since(start) == []
    record = json.loads((run_dir / "run.json").read_text())
    assert record["backend"] == "tff" and record["status"] == "completed" and record["rounds_run"] == 3
    assert (run_dir / "report.md").is_file() and (run_dir / "checkpoint").is_dir()
    with np.load(run_dir / "weights.npz") as saved:
        tff_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    config = FederatedConfig.from_mapping(SETTINGS)
    flower = _flower_fedavg(config)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(tff_weights, flower, strict=True))
    assert diff < 1e-5, diff  # same start, shards, batch order and SGD: the same model to float32 rounding
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(tff_weights, _initial(config), strict=True))
    assert moved > 1e-2  # and it did train


def _initial(config: FederatedConfig) -> list[np.ndarray]:
    from fedmodel import zoo
    from fedmodel.federated.shards import dataset_for

    info = dataset_for(config).info
    model = zoo.build_model(
        config.model, input_shape=info.input_shape, num_classes=info.num_classes, seed=config.seed, **config.hparams
    )
    return list(model.get_weights())


@pytest.mark.slow
def test_ctrl_c_stops_tff_and_its_worker(tmp_path: Path) -> None:
    start = time.time()
    # a shell's background job starts with SIGINT ignored, which Python keeps: the default, as in a terminal
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        _command(tmp_path / "run", rounds=400), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=reset,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("round   2"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        assert "stopped TFF's child processes" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _workers_since(start) == []
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["rounds_run"] >= 2  # finished rounds are kept; the same command resumes


@pytest.mark.slow
def test_dp_on_tff_charges_the_same_ledger_as_flower_and_draws_fresh_noise(tmp_path: Path) -> None:
    import dp_accounting

    from fedmodel.privacy import accounting
    from fedmodel.privacy.accounting import FixedSizeSampling

    dp = {"dp-noise": 0.8, "dp-clip": 1.0, "client-sampling": "fixed-size", "delta": 1e-3, "rounds": 2}
    weights = []
    start = time.time()
    for name in ("a", "b"):  # same seed, every client every round: only the noise can differ
        run_dir = tmp_path / name
        proc = subprocess.run(
            _command(run_dir, **dp), capture_output=True, text=True, timeout=900, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        with np.load(run_dir / "weights.npz") as saved:
            weights.append(saved["arr_0"])
    assert _workers_since(start) == []
    assert not np.allclose(weights[0], weights[1], atol=1e-3)  # fresh noise per run, not --seed
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    # what the Flower path's ledger charges for the same settings (fixed-size 4 of 4, replace-one)
    event = accounting.steps_event(dp_accounting.GaussianDpEvent(0.8), FixedSizeSampling(4, 4), steps=2)
    expected = accounting.epsilon(event, delta=1e-3, accountant="rdp")
    assert record["privacy"]["epsilon"]["rdp"] == pytest.approx(expected, rel=1e-12)
    assert [r["epsilon"] for r in record["rounds"]][-1] == pytest.approx(expected, rel=1e-12)
    ledger = json.loads((tmp_path / "a" / "privacy_ledger.json").read_text())
    assert sum(e["count"] for e in ledger["entries"]) == 2


@pytest.mark.slow
def test_dp_ftrl_on_tff_restarts_trees_as_the_flower_path_accounts_them(tmp_path: Path) -> None:
    import dp_accounting

    settings = {"dp-noise": 0.5, "dp-ftrl": "true", "clients-per-round": 2, "rounds": 4, "delta": 1e-3}
    run_dir = tmp_path / "run"
    start = time.time()
    proc = subprocess.run(
        _command(run_dir, **settings), capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _workers_since(start) == []
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    assert [e["sampling"] for e in ledger["entries"]] == [{"kind": "tree", "tree": t} for t in (0, 0, 1, 1)]
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(0.5, 2), 2)  # 4 // 2 = 2 rounds per tree
    record = json.loads((run_dir / "run.json").read_text())
    assert record["privacy"]["epsilon"]["rdp"] == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9)
    assert record["privacy"]["sampling"] == "tree"


def test_the_tff_backend_refuses_what_it_does_not_run() -> None:
    with pytest.raises(ConfigError, match="the tff backend does not run: dp-adaptive"):
        check_tff(FederatedConfig(dp_noise=1.0, dp_adaptive=True))
    with pytest.raises(ConfigError, match=r"strategy 'krum'.*attack"):
        check_tff(FederatedConfig(strategy="krum", attack="scale", attack_fraction=0.2))
    check_tff(FederatedConfig(strategy="fedadam"))
    with pytest.raises(ConfigError, match="ftrl-restart-rounds above"):  # TFF's trees restart on a fixed period
        check_tff(
            FederatedConfig(dp_noise=1.0, dp_ftrl=True, num_clients=10, clients_per_round=5, ftrl_restart_rounds=3)
        )


def test_tensorflow_federated_is_imported_only_by_its_backend() -> None:
    code = (
        "import sys; import fedmodel.cli, fedmodel.federated.server, fedmodel.federated.simulate, "
        "fedmodel.federated.tff_backend; print('tensorflow_federated' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
