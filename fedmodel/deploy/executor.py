"""A long-lived ClientApp executor for a SuperNode: one warm process instead of one process per message.

Flower 1.23 runs every message a SuperNode receives in a fresh ``flwr-clientapp`` process (``--isolation
subprocess``, the default; ``--isolation process`` has Flower's SuperExec launch the same per-message
process). With TensorFlow that costs ~10 s of imports and a model build per message, for well under a
second of training. This executor runs Flower's SuperExec loop (ask the SuperNode's ClientAppIo API
which runs have messages waiting, request a token) but launches each ClientApp with Flower's own
``run_clientapp`` in this process instead of spawning one: TensorFlow is imported once, and the
ClientApp's compiled model (:func:`fedmodel.federated.local.trainer_for`) stays cached across rounds.
It asks every 0.1 s when idle (Flower's SuperExec: 1 s).

Use it with ``flower-supernode --isolation process --clientappio-api-address 127.0.0.1:9094`` and, on
the same host, ``fedmodel deploy exec --clientappio-api-address 127.0.0.1:9094``. Messages run one at a
time, as a SuperNode receives them. The ClientAppIo API is local to the host and unencrypted (Flower's
``flwr-clientapp`` does not support TLS either): bind it to 127.0.0.1.
"""

from __future__ import annotations

import time

from flwr.common.grpc import create_channel
from flwr.common.retry_invoker import _make_simple_grpc_retry_invoker, _wrap_stub
from flwr.proto.appio_pb2 import ListAppsToLaunchRequest, RequestTokenRequest
from flwr.proto.clientappio_pb2_grpc import ClientAppIoStub
from flwr.supernode.runtime.run_clientapp import run_clientapp

#: Seconds between asks for a message to run when idle (Flower's SuperExec waits 1 s).
POLL = 0.1


def run_executor(clientappio_api_address: str, *, flwr_dir: str | None = None, poll: float = POLL) -> None:
    """Serve the SuperNode at ``clientappio_api_address`` until terminated (SIGTERM/SIGINT).

    The loop is Flower's SuperExec loop (list runs with messages waiting, request a token, launch), with
    the launch done in this process by Flower's own ``run_clientapp``.
    """
    import tensorflow  # noqa: F401 - import once, up front, not inside the first round

    channel = create_channel(server_address=clientappio_api_address, insecure=True, root_certificates=None)
    stub = ClientAppIoStub(channel)
    _wrap_stub(stub, _make_simple_grpc_retry_invoker())  # the SuperNode may not listen yet: retry
    try:
        while True:
            waiting = stub.ListAppsToLaunch(ListAppsToLaunchRequest())
            if waiting.run_ids:
                granted = stub.RequestToken(RequestTokenRequest(run_id=waiting.run_ids[0]))
                if granted.token:
                    run_clientapp(
                        clientappio_api_address=clientappio_api_address,
                        token=granted.token,
                        flwr_dir=flwr_dir,
                        certificates=None,
                        parent_pid=None,
                    )
                    continue
            time.sleep(poll)
    finally:
        channel.close()
