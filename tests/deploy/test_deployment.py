"""The real deployment engine on loopback: flower-superlink (TLS, node authentication, state.db), registered
flower-supernode processes with their own data files, `flwr run`; nothing mocked.

Each scenario is one :class:`~fedmodel.deploy.trial.Deployment`; every process it started is stopped
(also when the test fails), and the tests check that none is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmodel.deploy.certs import make_ca, make_node_keys
from fedmodel.deploy.trial import Deployment
from fedmodel.federated.config import FederatedConfig

pytestmark = pytest.mark.slow  # real Flower processes, TensorFlow in each: minutes

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "model": "mlp", "hparams": {"hidden": [32]}, "dataset": "digits", "num_clients": 3, "clients_per_round": 3,
    "partition": "iid", "local_epochs": 1, "local_batch_size": 16, "client_lr": 0.2, "fraction_evaluate": 0.0,
    "reply_timeout": 120.0, "available_timeout": 120.0,
}  # fmt: skip


def leftovers(workdir: Path) -> list[str]:
    """Command lines of live processes that mention the work directory (none may survive a test)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(workdir) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def status_exit(dep: Deployment, run_id: int) -> int:
    from fedmodel.cli import main

    return main(["deploy", "status", str(run_id), "--address", dep.control_address, "--ca", str(dep.ca)])


def rounds_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "run.json").read_text())["rounds"])
    except (OSError, ValueError, KeyError):
        return 0


def test_trial_command_with_client_level_and_local_dp(tmp_path: Path) -> None:
    """`fedmodel deploy trial`: TLS + node auth + 3 SuperNodes, DP-FedAvg and local DP-SGD, exit 0."""
    workdir = tmp_path / "trial"
    args = [sys.executable, "-m", "fedmodel.cli", "deploy", "trial", "--workdir", str(workdir)]
    settings = [
        "model=mlp", "hparam-hidden=[32]", "dataset=digits", "num-clients=3", "clients-per-round=2", "rounds=3",
        "partition=iid", "local-epochs=2", "client-lr=0.2", "dp-noise=0.3", "dp-clip=2.0", "delta=1e-3",
        "local-dp-noise=0.5", "local-dp-clip=2.0", "fraction-evaluate=0.5", "reply-timeout=300",
        "audit-canaries=20",
    ]  # fmt: skip
    for setting in settings:
        args += ["--set", setting]
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=1500, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        record = json.loads((workdir / "run" / "run.json").read_text())
        assert record["status"] == "completed" and record["rounds_run"] == 3
        assert [r["round"] for r in record["rounds"]] == [1, 2, 3]
        assert record["privacy"]["rounds"] == 3 and record["privacy"]["unit"] == "client"
        assert record["privacy"]["local_dp"]["epsilon_max_over_clients"] > 0
        assert record["reply_audit"]["records"] == ["arrays:arrays", "metrics:metrics"]
        ledger = json.loads((workdir / "run" / "privacy_ledger.json").read_text())
        assert sum(e["count"] for e in ledger["entries"]) == 3
        for name in ("report.md", "privacy_report.md"):
            assert (workdir / "run" / name).is_file()
        assert record["outputs"]["client_data"] == "node-local"
        # the one-run audit ran on the deployment too (canary clients made by the ServerApp), ledger unchanged
        assert record["audit"]["unit"] == "client" and record["audit"]["canaries"] == 20
        assert record["audit"]["epsilon_lower_bound"] <= record["audit"]["claimed_epsilon"]
        assert (workdir / "run" / "audit" / "client_canaries.json").is_file()
        assert "its own node-local data file" in (workdir / "run" / "report.md").read_text()
        # The per-round lines were printed as the run went, and the keys are private to their owners.
        assert "round   3" in proc.stderr
        for key in [*workdir.glob("keys/*.key"), *workdir.glob("certs/*.key")]:
            assert key.stat().st_mode & 0o077 == 0, key
    finally:
        assert leftovers(workdir) == []


def test_trial_with_secure_aggregation(tmp_path: Path) -> None:
    """SecAgg+ with the distributed discrete Gaussian across real SuperNodes (TLS, node auth)."""
    workdir = tmp_path / "trial"
    args = [sys.executable, "-m", "fedmodel.cli", "deploy", "trial", "--workdir", str(workdir)]
    settings = [
        "model=mlp", "hparam-hidden=[32]", "dataset=digits", "num-clients=3", "clients-per-round=3", "rounds=2",
        "partition=iid", "local-epochs=2", "client-lr=0.2", "dp-noise=0.3", "dp-clip=2.0", "delta=1e-3",
        "client-sampling=fixed-size", "secure-aggregation=true", "secagg-min-survivors=2",
        "fraction-evaluate=0", "reply-timeout=300",
    ]  # fmt: skip
    for setting in settings:
        args += ["--set", setting]
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=1500, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        record = json.loads((workdir / "run" / "run.json").read_text())
        assert record["status"] == "completed" and [r["survivors"] for r in record["rounds"]] == [3, 3]
        assert record["privacy"]["secure_aggregation"]["counted_shares"] == 1
        # what reached the server: SecAgg+'s records only; no client sent a training metric or its weights
        assert "config:secaggplus_configs" in record["reply_audit"]["records"]
        assert not {"loss", "accuracy", "num-examples"} & set(record["reply_audit"]["metrics"])
        assert "arrays:arrays" not in record["reply_audit"]["records"]
    finally:
        assert leftovers(workdir) == []


@pytest.fixture
def deployment(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = FederatedConfig(**BASE, rounds=4)  # type: ignore[arg-type]
    dep = Deployment(tmp_path / "dep", nodes=3)
    try:
        dep.prepare(config)
        dep.start_superlink()
        yield dep, config
    finally:
        dep.stop()
        assert leftovers(dep.workdir) == []


def test_unauthenticated_nodes_are_refused_and_a_killed_node_does_not_stop_the_run(deployment) -> None:  # type: ignore[no-untyped-def]
    dep, config = deployment
    # A node whose key was never registered, and a node that does not trust the server's CA: both refused.
    stranger = make_node_keys(dep.workdir / "stranger", "stranger")
    dep.start_node(0, key=stranger.private)
    other_ca = make_ca(dep.workdir / "other-ca")
    dep.start_node(1, ca=other_ca.cert)
    wait_for(lambda: not dep.processes["node-000"].alive(), 120, "the unregistered node to give up")
    wait_for(lambda: not dep.processes["node-001"].alive(), 120, "the node without the CA to give up")
    refused = dep.processes["node-000"].log.read_text()
    assert "No SuperNode found with the given public key" in refused, refused[-2000:]
    untrusted = dep.processes["node-001"].log.read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted or "certificate" in untrusted.lower(), untrusted[-2000:]
    for name in ("node-000", "node-001"):
        dep.processes.pop(name).stop()
        dep.processes.pop(f"{name}-exec").stop()

    # The registered nodes join; node 2 is killed after round 1 and the run finishes with the other two.
    dep.register_nodes()
    dep.start_nodes()
    run_config = {**config.to_run_config(), "min-available-clients": 2, "min-replies": 2, "run-dir": str(dep.run_dir)}
    run_id = dep.submit(run_config)
    wait_for(lambda: rounds_done(dep.run_dir) >= 1, 900, "round 1")
    dep.processes["node-002"].stop(kill=True)
    dep.processes["node-002-exec"].stop(kill=True)
    state = dep.follow(run_id, timeout=1200)
    assert state.succeeded, state.describe()
    assert status_exit(dep, run_id) == 0  # `fedmodel deploy status`: Flower's finished:completed
    record = json.loads((dep.run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["rounds_run"] == 4 and record["failed_rounds"] == []
    diagnostics = json.loads((dep.run_dir / "diagnostics.json").read_text())
    assert any(d.get("dropped") for d in diagnostics["rounds"][1:]) or all(
        d["replies"] == 2 for d in diagnostics["rounds"][2:]
    )
    assert [d["replies"] for d in diagnostics["rounds"]][-1] == 2
    accuracies = [r["accuracy"] for r in record["rounds"]]
    assert accuracies[-1] > 0.5


def test_a_restarted_superlink_resumes_a_dp_run_from_its_last_round(deployment) -> None:  # type: ignore[no-untyped-def]
    dep, config = deployment
    dep.register_nodes()
    dep.start_nodes()
    run_config = {
        **config.to_run_config(), "dp-noise": 0.5, "dp-clip": 2.0, "delta": 1e-3, "run-dir": str(dep.run_dir),
    }  # fmt: skip
    interrupted = dep.submit(run_config)
    wait_for(lambda: rounds_done(dep.run_dir) >= 2, 900, "round 2")
    dep.processes.pop("superlink").stop(kill=True)
    done = rounds_done(dep.run_dir)
    dep.start_superlink()  # same state.db: the registered nodes reconnect
    run_id = dep.submit(run_config)  # the documented command: the same run-dir again
    state = dep.follow(run_id, timeout=1200)
    assert state.succeeded, state.describe()
    record = json.loads((dep.run_dir / "run.json").read_text())
    assert [r["round"] for r in record["rounds"]] == [1, 2, 3, 4] and record["status"] == "completed"
    ledger = json.loads((dep.run_dir / "privacy_ledger.json").read_text())
    assert sum(e["count"] for e in ledger["entries"]) == 4  # rounds before and after the restart, once each
    assert "resuming" in (dep.logs / "superlink.log").read_text()
    assert status_exit(dep, interrupted) != 0  # the run the restart cut short did not complete
    assert done >= 2


@pytest.fixture
def client_namespace():  # type: ignore[no-untyped-def]
    """A network namespace for the client hosts, joined to this one by a veth pair: the server listens on
    10.213.N.1 (not loopback), the clients have 10.213.N.2 and cannot see the server's 127.0.0.1."""
    import shutil

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("separate network namespaces need root and iproute2 (`ip netns`); this machine has neither")
    n = os.getpid() % 200 + 20
    name, host, peer = f"fmclients{n}", f"fmh{n}", f"fmp{n}"
    server, client = f"10.213.{n}.1", f"10.213.{n}.2"
    setup = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
        ["ip", "link", "set", peer, "netns", name],
        ["ip", "addr", "add", f"{server}/24", "dev", host],
        ["ip", "link", "set", host, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{client}/24", "dev", peer],
        ["ip", "netns", "exec", name, "ip", "link", "set", peer, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]

    def teardown() -> None:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "link", "del", host], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    for command in setup:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            teardown()
            pytest.skip(f"cannot build a network namespace here ({' '.join(command)}: {done.stderr.strip()})")
    try:
        yield name, server
    finally:
        teardown()


def test_clients_in_their_own_network_namespace_reach_the_server_only_at_its_address(
    tmp_path: Path, client_namespace: tuple[str, str]
) -> None:
    namespace, server = client_namespace
    prefix = ["ip", "netns", "exec", namespace]
    config = FederatedConfig(**{**BASE, "num_clients": 2, "clients_per_round": 2}, rounds=2)  # type: ignore[arg-type]
    dep = Deployment(tmp_path / "netns", nodes=2, server_host=server, node_prefix=prefix)
    try:
        dep.prepare(config)
        dep.start_superlink()
        probe = (
            "import socket, sys; s = socket.socket(); s.settimeout(3); "
            "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))"
        )
        # From the clients' namespace: the server's loopback is not there, its address is.
        loopback = subprocess.run([*prefix, sys.executable, "-c", probe, "127.0.0.1", str(dep.fleet_port)], check=False)
        routed = subprocess.run([*prefix, sys.executable, "-c", probe, server, str(dep.fleet_port)], check=False)
        assert loopback.returncode != 0 and routed.returncode == 0
        dep.register_nodes()
        dep.start_nodes()
        run_id = dep.submit({**config.to_run_config(), "run-dir": str(dep.run_dir)})
        state = dep.follow(run_id, timeout=1200)
        assert state.succeeded, state.describe()
        record = json.loads((dep.run_dir / "run.json").read_text())
        assert record["status"] == "completed" and [r["round"] for r in record["rounds"]] == [1, 2]
    finally:
        dep.stop()
        assert leftovers(dep.workdir) == []


def test_ctrl_c_stops_the_trial_and_its_processes_and_the_same_command_resumes(tmp_path: Path) -> None:
    import signal

    workdir = tmp_path / "interrupted"
    settings = [
        "model=mlp", "hparam-hidden=[16]", "dataset=digits", "num-clients=2", "clients-per-round=2",
        "partition=iid", "fraction-evaluate=0", "reply-timeout=300",
    ]  # fmt: skip

    def command(rounds: int) -> list[str]:
        args = [sys.executable, "-m", "fedmodel.cli", "deploy", "trial", "--workdir", str(workdir)]
        for setting in [*settings, f"rounds={rounds}"]:
            args += ["--set", setting]
        return args

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a shell's background job starts with SIGINT ignored, which Python keeps: give the trial the default
    # disposition, as a terminal's foreground process has
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        command(50), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=reset
    )
    try:
        wait_for(lambda: rounds_done(workdir / "run") >= 1, 900, "round 1")
        proc.send_signal(signal.SIGINT)  # to the trial only, as a terminal's Ctrl-C reaches its foreground process
        start = time.monotonic()
        _, err = proc.communicate(timeout=120)
        stopped = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert stopped < 60 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("fedmodel: interrupted")] != []
    assert leftovers(workdir) == []
    done = rounds_done(workdir / "run")
    first = json.loads((workdir / "run" / "run.json").read_text())["rounds"]
    # The same command (with the rounds wanted now) resumes from the checkpoint with the same material.
    resumed = subprocess.run(command(done + 1), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((workdir / "run" / "run.json").read_text())
    assert record["rounds"][:done] == first[:done] and len(record["rounds"]) == done + 1
    assert "reusing its certificates" in resumed.stderr and leftovers(workdir) == []
