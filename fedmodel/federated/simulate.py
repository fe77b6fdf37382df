"""``fedmodel simulate`` and ``fedmodel demo``: the same ServerApp/ClientApp on Flower's simulation engine.

Settings: a TOML file (flat keys, or a ``[fedmodel]`` / ``[tool.flwr.app.config]`` table) plus
``--set key=value`` overrides, validated into a :class:`FederatedConfig` before Ray starts. Ray runs one
actor per core (``client_resources.num_cpus = 1``); each actor keeps its compiled model and its shards in
memory across rounds. Ray is shut down when the run ends or fails.
"""

from __future__ import annotations

import json
import os
import signal
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig

DEMO: dict[str, Any] = {
    # DP-FedAvg (client-level DP) on the embedded digits: 200 non-IID clients (Dirichlet alpha 0.5),
    # 50 per round, each update clipped to norm 1 and the sum noised with std 1.0 (McMahan et al. 2018).
    # Small populations make client-level DP expensive: this spends epsilon 7.9 (RDP) / 6.8 (PLD) at delta 1e-3
    # in 30 rounds, with Poisson client sampling (about 50 clients a round, from OS entropy).
    "model": "logreg",
    "dataset": "digits",
    "num-clients": 200,
    "clients-per-round": 50,
    "rounds": 30,
    "partition": "dirichlet",
    "alpha": 0.5,
    "local-epochs": 5,
    "local-batch-size": 10,
    "client-lr": 0.1,
    "dp-noise": 1.0,
    "dp-clip": 1.0,
    "delta": 1e-3,
    "fraction-evaluate": 0.0,
}


def read_settings(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The settings table of a TOML file (``{}`` for None)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file} is not valid TOML: {err}") from err
    table: Mapping[str, Any] = (
        data.get("fedmodel") or data.get("tool", {}).get("flwr", {}).get("app", {}).get("config") or data
    )
    return dict(table)


def settings_to_config(values: Mapping[str, Any]) -> FederatedConfig:
    """Validate settings into a config; also checks model, data and partition without TensorFlow."""
    config = FederatedConfig.from_mapping(values)
    preflight(config)
    return config


def preflight(config: FederatedConfig) -> None:
    """Fail fast on bad input: the dataset loads, the model fits it, the partition is feasible."""
    from fedmodel.federated.shards import partitions_for
    from fedmodel.model_plan import plan_run

    plan_run(
        model=config.model,
        dataset=config.dataset,
        hparams=dict(config.hparams),
        data_path=config.data_path,
        seed=config.seed,
        seq_len=config.seq_len,
        max_examples=config.max_examples,
    )
    partitions_for(config)


def check_continuation(config: FederatedConfig) -> None:
    """Refuse, before Ray starts, a run directory that ``config`` cannot continue (nothing is written).

    That is a file, a directory holding another kind of run (a central ``fedmodel train`` run), or a
    federated run started with other settings: a federated run directory is continued (resumed, or extended
    by raising ``rounds``) only with its own settings. The error lists every setting that differs, with both
    values.
    """
    if config.run_dir is None:
        return
    run_dir = Path(config.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} is a file, not a directory; pass a new --run-dir")
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"run directory {run_dir}: its run.json is unreadable ({err}); pass a new --run-dir") from err
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "central":
        raise ConfigError(
            f"run directory {run_dir} holds a central (train) run, not a federated one; "
            "pass a new --run-dir for the simulation"
        )
    if kind != "federated":
        raise ConfigError(
            f"run directory {run_dir} holds no federated run (run.json kind {kind!r}); pass a new --run-dir"
        )
    saved = record.get("config", {})
    mine = json.loads(json.dumps(config.to_dict(), default=list))  # as run.json stores it (tuples as lists)
    may_differ = continuable_settings()
    differences = [
        f"{key.replace('_', '-')} {saved.get(key)!r} in the run, {mine[key]!r} now"
        for key in sorted(mine)
        if key not in may_differ and saved.get(key) != mine[key]
    ]
    done = int(record.get("rounds_run") or 0)
    if config.rounds < done:
        differences.append(f"rounds {config.rounds} now, but the run has finished {done} (rounds can only be raised)")
    if differences:
        raise ConfigError(
            f"run directory {run_dir} holds a federated run with other settings: {'; '.join(differences)}. "
            "Continue it with its own settings (raising rounds is allowed) or pass a new --run-dir"
        )


def ray_cpus(num_cpus: int | None = None) -> int:
    """CPUs Ray gets, one client actor each: ``num_cpus``, else every core."""
    return num_cpus or os.cpu_count() or 1


def continuable_settings() -> frozenset[str]:
    """Settings that may differ when a run directory is continued: those the server's ``check_run_dir`` ignores.

    Raising ``rounds`` continues a run; quorum settings and ``fail-partitions`` (fault injection) may change.
    Imports the server (TensorFlow), so it is called only for a run directory that holds a run.
    """
    from fedmodel.federated.server import QUORUM_SETTINGS

    return frozenset({"rounds", "run_dir", "fail_partitions", *QUORUM_SETTINGS})


def run_simulation(config: FederatedConfig, *, num_cpus: int | None = None) -> None:
    """Run the federated experiment on Flower's Ray simulation engine (blocks until done)."""
    import logging

    import flwr.simulation

    from fedmodel.federated.client_app import make_client_app
    from fedmodel.federated.server_app import make_server_app

    logging.getLogger("flwr").setLevel(logging.WARNING)  # fedmodel prints its own line per round
    cpus = ray_cpus(num_cpus)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True},
    }
    previous = signal.signal(signal.SIGTERM, _terminate)  # so `finally` shuts Ray down on SIGTERM too
    try:
        flwr.simulation.run_simulation(
            server_app=make_server_app(config),
            client_app=make_client_app(config),
            num_supernodes=config.num_clients,
            backend_config=backend,  # type: ignore[arg-type]
        )
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
