"""A small client of the SuperLink's Control API (the one ``flwr`` talks to): run status, node registration.

Flower's CLI exits 0 even when a run failed, and each ``flwr`` call imports TensorFlow (~10-20 s here):
fedmodel asks the same gRPC API directly, with Flower's own protobuf messages and TLS channel. What a run
finished as (``finished:completed``, ``finished:failed``, ``finished:stopped``) becomes an exit status in
``fedmodel deploy status``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedmodel.errors import ConfigError

#: Flower's run statuses (``flwr.common.constant.Status``/``SubStatus``) as fedmodel reports them.
FINISHED = "finished"
COMPLETED = "completed"


@dataclasses.dataclass(frozen=True)
class RunState:
    """Where a run stands: Flower's status, sub-status and details."""

    run_id: int
    status: str
    sub_status: str
    details: str

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def succeeded(self) -> bool:
        return self.finished and self.sub_status == COMPLETED

    def describe(self) -> str:
        text = f"{self.status}:{self.sub_status}" if self.sub_status else self.status
        return f"{text} ({self.details})" if self.details else text


class ControlClient:
    """Control API at ``address`` (``host:9093``), over TLS trusting ``ca`` (``None``: insecure)."""

    def __init__(self, address: str, *, ca: Path | None) -> None:
        from flwr.common.grpc import create_channel
        from flwr.proto.control_pb2_grpc import ControlStub

        root = Path(ca).read_bytes() if ca is not None else None
        self._channel = create_channel(server_address=address, insecure=ca is None, root_certificates=root)
        self._stub: Any = ControlStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_state(self, run_id: int) -> RunState:
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._stub.ListRuns(ListRunsRequest(run_id=run_id))
        if run_id not in response.run_dict:
            raise ConfigError(f"the SuperLink knows no run {run_id}")
        status = response.run_dict[run_id].status
        return RunState(run_id, status.status, status.sub_status, status.details)

    def register_node(self, public_key: Path) -> int:
        """Register a SuperNode's public key (as ``flwr supernode register``); returns its node id."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        key = serialization.load_ssh_public_key(Path(public_key).read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigError(f"{public_key} is not an EC public key (got {type(key).__name__})")
        response = self._stub.RegisterNode(RegisterNodeRequest(public_key=public_key_to_bytes(key)))
        return int(response.node_id)

    def stop_run(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self._stub.StopRun(StopRunRequest(run_id=run_id))

    def wait(
        self,
        run_id: int,
        *,
        timeout: float,
        poll: float = 2.0,
        on_poll: Callable[[RunState], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RunState:
        """Poll until the run has finished (or ``timeout`` seconds pass: the last state is returned)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(run_id)
            if on_poll is not None:
                on_poll(state)
            if state.finished or time.monotonic() >= deadline:
                return state
            sleep(poll)
