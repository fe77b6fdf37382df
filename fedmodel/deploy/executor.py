"""A long-lived ClientApp executor for a SuperNode: one warm process instead of one process per message.

Flower 1.23 runs every message a SuperNode receives in a fresh ``flwr-clientapp`` process (``--isolation
subprocess``, the default; ``--isolation process`` has Flower's SuperExec launch the same per-message
process). With TensorFlow that costs ~10 s of imports and a model build per message, for well under a
second of training. This executor is a SuperExec *plugin* (Flower's own extension point,
:func:`flwr.supercore.superexec.run_superexec.run_superexec`) whose ``launch_app`` runs Flower's own
``run_clientapp`` in this process instead of spawning one: TensorFlow is imported once, and the
ClientApp's compiled model (:func:`fedmodel.federated.local.trainer_for`) stays cached across rounds.

Use it with ``flower-supernode --isolation process --clientappio-api-address 127.0.0.1:9094`` and, on
the same host, ``fedmodel deploy exec --clientappio-api-address 127.0.0.1:9094``. Messages run one at a
time, as a SuperNode receives them. The ClientAppIo API is local to the host and unencrypted (Flower's
``flwr-clientapp`` does not support TLS either): bind it to 127.0.0.1.
"""

from __future__ import annotations

from flwr.proto.clientappio_pb2_grpc import ClientAppIoStub
from flwr.supercore.superexec.plugin import ClientAppExecPlugin
from flwr.supercore.superexec.run_superexec import run_superexec
from flwr.supernode.runtime.run_clientapp import run_clientapp


class InProcessClientApps(ClientAppExecPlugin):
    """Runs each granted ClientApp token in this process (Flower's plugin spawns a process per token)."""

    def launch_app(self, token: str, run_id: int) -> None:
        run_clientapp(
            clientappio_api_address=self.appio_api_address,
            token=token,
            flwr_dir=self.flwr_dir,
            certificates=None,
            parent_pid=None,
        )


def run_executor(clientappio_api_address: str, *, flwr_dir: str | None = None, parent_pid: int | None = None) -> None:
    """Serve the SuperNode at ``clientappio_api_address`` until terminated (SIGTERM/SIGINT)."""
    import tensorflow  # noqa: F401 - import once, up front, not inside the first round

    run_superexec(
        plugin_class=InProcessClientApps,
        stub_class=ClientAppIoStub,
        appio_api_address=clientappio_api_address,
        flwr_dir=flwr_dir,
        parent_pid=parent_pid,
    )
