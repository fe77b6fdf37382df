"""Federated training: the pieces the Flower ServerApp and ClientApp share.

``config`` (the experiment), ``shards`` (each client's private data), ``local`` (cached local training),
``weights`` (update arithmetic), ``client_dp`` + ``dp_strategy`` (client-level DP-FedAvg), ``strategies``
(Flower strategies from the config), ``server`` (the round loop with checkpoints, ledger and budget),
``client_app`` / ``server_app`` (the Flower apps), ``report`` (tables and plots).
Importing this package imports neither Flower nor TensorFlow.
"""
