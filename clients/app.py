"""Flower ClientApp entry point: each SuperNode trains on its own shard only.

In simulation the shard is the node's partition (``partition-id`` / ``num-partitions``); in a deployment
it is the local ``.npz`` named by the SuperNode's ``node_config`` (``--node-config "data-path='...'"``).
The logic lives in :mod:`fedmodel.federated`.
"""

from fedmodel.federated.client_app import make_client_app

app = make_client_app()
