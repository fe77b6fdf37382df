"""Flower ServerApp entry point for ``flwr run .`` and ``flower-superlink`` deployments.

Settings come from the run config (``[tool.flwr.app.config]`` in pyproject.toml, ``--run-config``);
the logic lives in :mod:`fedmodel.federated`.
"""

from fedmodel.federated.server_app import make_server_app

app = make_server_app()
