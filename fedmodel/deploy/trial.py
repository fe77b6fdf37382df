"""A one-machine trial of the real multi-machine deployment: the processes a server and N client hosts run.

:class:`Deployment` starts, on loopback, exactly what ``docs/deployment.md`` tells a user to start on real
hosts: a ``flower-superlink`` with TLS (a CA and server certificate made by :mod:`.certs`), SuperNode
authentication and a ``--database`` file; N registered ``flower-supernode`` processes, each with its own
exported ``.npz`` (:mod:`fedmodel.federated.node_data`) in ``--node-config``; then ``flwr run`` of the
project's ServerApp/ClientApp. It follows the run directory and prints the same per-round lines as
``fedmodel simulate``, and stops every process it started (process groups: SuperLink with its
``flwr-serverapp``, SuperNodes with their ``flwr-clientapp``), also on Ctrl-C or failure.

Everything lives in one work directory::

    WORKDIR/
        certs/   ca.crt ca.key server.pem server.key      (keys 0600)
        keys/    node-000.key node-000.pub ...             (SuperNode authentication, keys 0600)
        data/    client-000.npz ... manifest.json          (each node's own file)
        logs/    superlink.log node-000.log node-000-exec.log flwr-run.log
        flwr/    Flower's app installs (--flwr-dir), one per process
        state.db                                           (SuperLink state, survives a restart)
        run/     run.json report.md privacy_ledger.json checkpoint/ ...   (the run directory)

With ``warm=True`` (default) each SuperNode runs with ``--isolation process`` and a long-lived
:mod:`.executor` process that keeps TensorFlow and the compiled model across rounds; ``warm=False`` is
Flower's default (a new ``flwr-clientapp`` process per message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from fedmodel.errors import ConfigError

#: The federation in pyproject.toml the trial runs on (its address and CA are overridden per trial).
FEDERATION = "deployment"


def project_root() -> Path:
    """The directory holding fedmodel's ``pyproject.toml`` (the Flower app that ``flwr run`` builds)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"the deployment trial runs from a fedmodel checkout; no pyproject.toml in {root}")
    return root


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below Linux's ephemeral range (32768+), where outgoing connections
    (gRPC clients, Flower's helper processes) cannot take it between our check and the server's bind."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000-32000 on 127.0.0.1")


def run_config_arg(values: Mapping[str, Any]) -> str:
    """``--run-config`` text for ``flwr run`` (TOML values, space separated)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = "'" + str(value).replace("'", "") + "'"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


@dataclasses.dataclass
class Process:
    """A started process group and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, *, grace: float = 10.0, kill: bool = False) -> None:
        if not self.alive():
            return
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)
        # The group may outlive its leader (a flwr-clientapp still finishing): take it down too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Deployment:
    """The SuperLink, SuperNodes and executors of one trial (a context manager that stops them all)."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int,
        warm: bool = True,
        log: Callable[[str], None] | None = None,
        server_host: str = "127.0.0.1",
        node_prefix: Sequence[str] = (),
    ) -> None:
        """``server_host``: the address the Fleet API binds and SuperNodes connect to (in the certificate);
        ``node_prefix``: a command that SuperNodes and their executors run under (``ip netns exec NS``)."""
        if nodes < 1:
            raise ConfigError(f"a deployment trial needs at least 1 node, got {nodes}")
        self.workdir = Path(workdir).resolve()
        self.nodes = nodes
        self.server_host = server_host
        self.node_prefix = list(node_prefix)
        self.warm = warm
        self.say = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.certs = self.workdir / "certs"
        self.keys = self.workdir / "keys"
        self.data = self.workdir / "data"
        self.logs = self.workdir / "logs"
        self.run_dir = self.workdir / "run"
        self.fleet_port, self.control_port, self.serverappio_port = free_port(), free_port(), free_port()
        self.clientappio_ports = [free_port() for _ in range(nodes)]
        self.processes: dict[str, Process] = {}
        # Flower's processes start their helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name:
        # this environment's scripts come first on PATH.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}

    # -- material -----------------------------------------------------------------------------------
    def prepare(self, config: Any) -> bool:
        """Certificates, node keys and each node's exported data file; returns False for a new work directory.

        A work directory of an earlier trial (interrupted, or finished with fewer rounds) is reused as it is:
        its material, its data files (checked against their manifest) and its run directory, which resumes.
        """
        from fedmodel.deploy.certs import make_ca, make_node_keys, make_server_certificate
        from fedmodel.federated.node_data import export_shards, verify_manifest

        if config.num_clients != self.nodes:
            raise ConfigError(
                f"num-clients is {config.num_clients}, the trial starts {self.nodes} nodes: make them equal"
            )
        if self.workdir.exists() and any(self.workdir.iterdir()):
            expected = [
                self.ca,
                *(self.node_key(i) for i in range(self.nodes)),
                *(self.node_data(i) for i in range(self.nodes)),
            ]
            missing = [str(p.relative_to(self.workdir)) for p in expected if not p.is_file()]
            if missing:
                raise ConfigError(
                    f"work directory {self.workdir} is not empty and not a trial of {self.nodes} nodes "
                    f"(missing {', '.join(missing[:3])}); pass a new one"
                )
            changed = verify_manifest(self.data)
            if changed:
                raise ConfigError(f"the data files in {self.data} changed since they were exported: {changed}")
            (self.workdir / "state.db").unlink(missing_ok=True)  # a new SuperLink; the run directory resumes
            return True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir()
        ca = make_ca(self.certs)
        make_server_certificate(self.certs, ca=ca, hosts=sorted({self.server_host, "127.0.0.1", "localhost"}))
        for i in range(self.nodes):
            make_node_keys(self.keys, f"node-{i:03d}")
        export_shards(config, self.data)
        return False

    @property
    def ca(self) -> Path:
        return self.certs / "ca.crt"

    def node_key(self, i: int) -> Path:
        return self.keys / f"node-{i:03d}.key"

    def node_data(self, i: int) -> Path:
        return self.data / f"client-{i:03d}.npz"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    # -- processes ----------------------------------------------------------------------------------
    def _start(self, name: str, args: list[str], *, flwr_home: Path | None = None) -> Process:
        log = self.logs / f"{name}.log"
        env = self.env if flwr_home is None else {**self.env, "FLWR_HOME": str(flwr_home)}
        handle: IO[bytes] = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when we return
        try:
            popen = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True
            )
        finally:
            handle.close()
        process = Process(name, popen, log)
        self.processes[name] = process
        return process

    def start_superlink(self, *, timeout: float = 180.0) -> None:
        """TLS, SuperNode authentication, state in ``state.db``; returns once the Control API answers."""
        self._start(
            "superlink",
            [
                _bin("flower-superlink"),
                "--ssl-ca-certfile", str(self.ca),
                "--ssl-certfile", str(self.certs / "server.pem"),
                "--ssl-keyfile", str(self.certs / "server.key"),
                "--enable-supernode-auth",
                "--database", str(self.workdir / "state.db"),
                "--fleet-api-address", f"{self.server_host}:{self.fleet_port}",
                "--control-api-address", self.control_address,
                "--serverappio-api-address", f"127.0.0.1:{self.serverappio_port}",
            ],
            flwr_home=self.workdir / "flwr" / "superlink",
        )  # fmt: skip
        self._until(lambda: self._control_ready(), timeout, "the SuperLink's Control API to answer", "superlink")

    def _control_ready(self) -> bool:
        import grpc

        from fedmodel.deploy.control import ControlClient

        try:
            with ControlClient(self.control_address, ca=self.ca) as control:
                control.run_state(0)
        except ConfigError:
            return True  # it answered: no run 0
        except grpc.RpcError as err:
            return bool(err.code() != grpc.StatusCode.UNAVAILABLE)  # any answer but "not there yet"
        return True

    def register_nodes(self, indices: range | list[int] | None = None) -> list[int]:
        from fedmodel.deploy.control import ControlClient

        with ControlClient(self.control_address, ca=self.ca) as control:
            return [
                control.register_node(self.keys / f"node-{i:03d}.pub")
                for i in (indices if indices is not None else range(self.nodes))
            ]

    def start_node(self, i: int, *, key: Path | None = None, ca: Path | None = None) -> None:
        """SuperNode ``i`` with its own data file (and its warm executor); ``key``/``ca`` override (tests)."""
        port = self.clientappio_ports[i]
        flwr_dir = self.workdir / "flwr" / f"node-{i:03d}"
        args = [
            _bin("flower-supernode"),
            "--superlink", f"{self.server_host}:{self.fleet_port}",
            "--root-certificates", str(ca or self.ca),
            "--auth-supernode-private-key", str(key or self.node_key(i)),
            "--node-config", f"data-path='{self.node_data(i)}'",
            "--clientappio-api-address", f"127.0.0.1:{port}",
            "--flwr-dir", str(flwr_dir),
            "--max-retries", "0" if ca is not None or key is not None else "100",
        ]  # fmt: skip
        if self.warm:
            args += ["--isolation", "process"]
        self._start(f"node-{i:03d}", [*self.node_prefix, *args], flwr_home=flwr_dir)
        if self.warm:
            self._start(
                f"node-{i:03d}-exec",
                [*self.node_prefix, sys.executable, "-m", "fedmodel.cli", "deploy", "exec",
                 "--clientappio-api-address", f"127.0.0.1:{port}", "--flwr-dir", str(flwr_dir)],
                flwr_home=flwr_dir,
            )  # fmt: skip

    def start_nodes(self) -> None:
        for i in range(self.nodes):
            self.start_node(i)

    def submit(self, run_config: Mapping[str, Any], *, timeout: float = 300.0) -> int:
        """``flwr run`` the project's app on this SuperLink; returns the run id."""
        federation = f"address='{self.control_address}' root-certificates='{self.ca}'"
        args = [
            _bin("flwr"), "run", str(project_root()), FEDERATION,
            "--federation-config", federation,
            "--run-config", run_config_arg(run_config),
            "--format", "json",
        ]  # fmt: skip
        env = {**self.env, "FLWR_HOME": str(self.workdir / "flwr" / "cli")}
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        (self.logs / "flwr-run.log").open("a").write(proc.stdout + proc.stderr)
        try:
            answer = json.loads(proc.stdout[proc.stdout.index("{") :])
        except ValueError:
            answer = {}
        if proc.returncode != 0 or not answer.get("success"):
            raise RuntimeError(f"flwr run failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
        return int(answer["run-id"])

    def follow(self, run_id: int, *, timeout: float, stream: Callable[[str], None] | None = None) -> Any:
        """Print each finished round as the ServerApp records it; return Flower's final state of the run."""
        from fedmodel.deploy.control import ControlClient
        from fedmodel.federated.server import _fmt

        printed = 0
        show = stream or self.say

        def on_poll(_: object) -> None:
            nonlocal printed
            rows, diags = _rounds(self.run_dir)
            for row in rows[printed:]:
                show(_fmt(row, diags.get(row["round"])))
            printed = len(rows)
            link = self.processes.get("superlink")
            if link is not None and not link.alive():
                raise RuntimeError(f"the SuperLink exited (see {link.log})")

        with ControlClient(self.control_address, ca=self.ca) as control:
            state = control.wait(run_id, timeout=timeout, on_poll=on_poll)
        on_poll(state)
        return state

    def stop(self) -> None:
        """Stop every process this trial started: the SuperLink (with its ServerApp) first, so that a round in
        flight is abandoned, not recorded as failed because its clients went away; then nodes and executors."""
        for name in sorted(self.processes, key=lambda n: n != "superlink"):
            self.processes[name].stop()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _until(self, ready: Callable[[], bool], timeout: float, what: str, name: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            process = self.processes[name]
            if not process.alive():
                raise RuntimeError(f"{name} exited while waiting for {what}; its log: {process.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {process.log}")
            time.sleep(1.0)


def _rounds(run_dir: Path) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """The rounds recorded so far in run.json, and diagnostics by round (empty if not written)."""
    rows = list(_record(run_dir).get("rounds", []))
    diags: dict[int, dict[str, Any]] = {}
    with contextlib.suppress(OSError, ValueError, KeyError):
        diags = {int(d["round"]): d for d in json.loads((run_dir / "diagnostics.json").read_text())["rounds"]}
    return rows, diags


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so a terminated trial also stops its processes."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_trial(
    config: Any,
    workdir: Path,
    *,
    warm: bool = True,
    timeout: float = 3600.0,
    log: Callable[[str], None] | None = None,
) -> tuple[int, Any]:
    """Prepare, start, ``flwr run`` ``config`` and follow it; returns (exit status, Flower's final run state).

    Exit status 0: Flower says the run completed, the run directory says every round counted, and no
    audit (audit-canaries) refuted the claimed epsilon.
    """
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    nodes = config.num_clients
    with interruptible(), Deployment(workdir, nodes=nodes, warm=warm, log=say) as deployment:
        if deployment.prepare(config):
            say(f"deployment trial in {deployment.workdir}: reusing its certificates, keys and data; the run resumes")
        else:
            say(f"deployment trial in {deployment.workdir}: made certificates, node keys, {nodes} data files")
        say("starting flower-superlink (TLS, SuperNode authentication, state.db)")
        deployment.start_superlink()
        deployment.register_nodes()
        say(
            f"registered {nodes} node keys; starting {nodes} flower-supernode processes"
            + (" + warm executors" if warm else "")
        )
        deployment.start_nodes()
        run_config = {**config.to_run_config(), "run-dir": str(deployment.run_dir)}
        say("flwr run . (TensorFlow loads in every new process: the first round takes longer)")
        run_id = deployment.submit(run_config)
        say(f"run {run_id} started; logs in {deployment.logs}")
        state = deployment.follow(run_id, timeout=timeout)
        record = _record(deployment.run_dir)
        ok = state.succeeded and record.get("status") == "completed" and not record.get("failed_rounds")
        say(f"run {run_id}: Flower says {state.describe()}; run directory {deployment.run_dir}")
        audit = record.get("audit") or {}
        if audit:
            say(f"audit: {audit.get('meaning')}")
        if audit.get("exceeds_claim"):  # a lower bound above the claimed epsilon refutes the DP claim
            say("fedmodel: error: the audit's lower bound exceeds the claimed epsilon")
            ok = False
        return (0 if ok else 1), state


def _record(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / "run.json").read_text()))
    except (OSError, ValueError):
        return {}
