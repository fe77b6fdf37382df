"""``fedmodel simulate`` and ``fedmodel demo``: the same ServerApp/ClientApp on Flower's simulation engine.

Settings: a TOML file (flat keys, or a ``[fedmodel]`` / ``[tool.flwr.app.config]`` table) plus
``--set key=value`` overrides, validated into a :class:`FederatedConfig` before Ray starts. Ray runs one
actor per core (``client_resources.num_cpus = 1``); each actor keeps its compiled model and its shards in
memory across rounds. The engine runs in a child process whose process group holds every Ray process;
that group is killed when the run ends, fails, or is interrupted (SIGINT/SIGTERM: one Ctrl-C stops the run
within a second or two, keeping the checkpoint of the last finished round), so no Ray process outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
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
    # a setting added after the run was written is absent from it: fine while it keeps its default
    defaults = json.loads(json.dumps(FederatedConfig().to_dict(), default=list))
    differences = [
        f"{key.replace('_', '-')} {saved.get(key, defaults.get(key))!r} in the run, {mine[key]!r} now"
        for key in sorted(mine)
        if key not in may_differ and saved.get(key, defaults.get(key)) != mine[key]
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


class SimulationInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run: Ray is gone and the run directory holds the rounds that finished."""

    def __init__(self, signum: int, rounds_done: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} after round {rounds_done}")
        self.signum = signum
        self.rounds_done = rounds_done

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class SimulationFailed(RuntimeError):
    """The simulation process exited with an error (its traceback is on stderr above)."""

    def __init__(self, returncode: int) -> None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        super().__init__(f"the simulation process {how}")
        self.returncode = returncode


#: Seconds to wait for the simulation's processes to be gone after they were sent SIGKILL.
REAP_TIMEOUT = 10.0


def run_simulation(config: FederatedConfig, *, num_cpus: int | None = None) -> None:
    """Run the federated experiment on Flower's Ray simulation engine (blocks until done).

    The engine runs in a child process in a session of its own, and Ray's processes (GCS, raylet, dashboard,
    agents, log monitor, ``ray::`` workers) start in that session's process group. When the run ends, or
    when this process gets SIGINT or SIGTERM, the whole group gets SIGKILL: a killed round is not waited for
    (Flower's server thread would wait for its replies), Ray's agents are not left to notice their raylet's
    death minutes later, and the server's checkpoint of the last finished round (written atomically) is what
    the run directory keeps. Raises :class:`SimulationInterrupted` after a signal and
    :class:`SimulationFailed` if the child failed. Called outside the main thread, signals are not handled.
    """
    import pickle
    import threading

    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT in a shell's background job
                previous[signum] = signal.signal(signum, on_signal)
    killed = False
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # as Ray does for its workers
        proc = subprocess.Popen(
            [sys.executable, "-c", "from fedmodel.federated.simulate import _child_main; _child_main()"],
            stdin=subprocess.PIPE,
            stdout=_stderr_fd(),  # stdout holds only fedmodel's result: whatever the apps, Flower or Ray print
            stderr=_stderr_fd(),
            env=env,
            start_new_session=True,  # its own process group, away from the terminal's Ctrl-C: we stop it
        )
        try:
            assert proc.stdin is not None
            try:
                # Pickled over a pipe to our own child, so the config arrives exactly as validated (tuples stay).
                pickle.dump((config, num_cpus, os.getpid()), proc.stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the child died at once; its exit status says so
            while not _exited(proc):
                if received:
                    killed = True
                    break
                time.sleep(0.1)
        finally:
            # Before the child is reaped: until then its pid, the group's id, cannot be reused.
            _kill_group(proc.pid)
            proc.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if killed:
        if config.run_dir is not None:
            _remove_partial_writes(Path(config.run_dir))
        raise SimulationInterrupted(received[0], rounds_finished(config.run_dir))
    if proc.returncode != 0:
        raise SimulationFailed(proc.returncode)


def rounds_finished(run_dir: str | os.PathLike[str] | None) -> int:
    """Rounds the run directory's checkpoint holds (what a rerun resumes after); 0 without one."""
    if run_dir is None:
        return 0
    root = Path(run_dir)
    for path, key in ((root / "checkpoint" / "state.json", "round"), (root / "run.json", "rounds_run")):
        try:
            return int(json.loads(path.read_text())[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 0


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child exited, leaving it unreaped (a zombie keeps its pid, the group id, from reuse)."""
    if hasattr(os, "waitid"):  # not on macOS: there, poll() reaps it
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return proc.poll() is not None


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file descriptor
        return 2


def _kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid`` until none of its processes runs (zombies aside); bounded wait."""
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except PermissionError:  # not ours (cannot happen for our own child's group): touch nothing
            return
        if not _running_members(pgid) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _running_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies, read from /proc ([] where there is no /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _remove_partial_writes(run_dir: Path) -> None:
    """Delete the temp files of atomic writes (``.NAME.XXXX.tmp``) that the killed server left unfinished."""
    for folder in (run_dir, run_dir / "checkpoint"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def engine_config(num_cpus: int | None = None) -> dict[str, Any]:
    """Flower's backend config: one CPU per client actor, Ray without its dashboard UI."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": ray_cpus(num_cpus), "include_dashboard": False, "log_to_driver": True},
    }


def _child_main() -> None:
    """The simulation process: reads ``(config, num_cpus, parent pid)`` pickled on stdin and runs the engine."""
    import logging
    import pickle

    import flwr.simulation

    from fedmodel.federated.client_app import make_client_app
    from fedmodel.federated.server_app import make_server_app

    config, num_cpus, parent = pickle.load(sys.stdin.buffer)

    def stop(signum: int, frame: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # this process and every Ray process it started

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _die_with_parent(parent)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # fedmodel prints its own line per round
    try:
        flwr.simulation.run_simulation(
            server_app=make_server_app(config),
            client_app=make_client_app(config),
            num_supernodes=config.num_clients,
            backend_config=engine_config(num_cpus),
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process (so ``stop`` kills its group) when the fedmodel process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the parent's cleanup still applies
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.killpg(os.getpgrp(), signal.SIGKILL)
