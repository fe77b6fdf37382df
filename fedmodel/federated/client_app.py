"""The Flower ClientApp's logic: open only this node's shard, train the cached model, reply with weights.

What leaves the client: the model's weights (same arrays, shapes and dtypes as it received) plus the
number of examples and scalar metrics. Never examples or labels.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.local import TrainerKey, trainer_for
from fedmodel.federated.shards import Shard, client_shard, dataset_for, file_shard
from fedmodel.privacy.ledger import PrivacyLedger

LEDGER_KEY = "fedmodel-local-dp-ledger"


def node_shard(config: FederatedConfig, context: Context) -> tuple[Shard, int]:
    """This node's data: ``node_config["data-path"]`` (deployment) or its simulation partition."""
    node = context.node_config
    if "data-path" in node:
        return file_shard(str(node["data-path"]), seed=config.seed), int(node.get("partition-id", 0))
    if "partition-id" not in node:
        raise ConfigError("node_config needs data-path (a local .npz) or partition-id (simulation)")
    partition_id = int(node["partition-id"])
    if partition_id in config.failing_partitions:
        raise RuntimeError(f"fault injection: partition {partition_id} fails (fail-partitions)")
    return client_shard(config, partition_id), partition_id


def _trainer(config: FederatedConfig, shard: Shard, *, proximal_mu: float, local_dp: bool) -> Any:
    key = TrainerKey.of(
        config if local_dp else config.without_local_dp(),
        input_shape=tuple(shard.x_train.shape[1:]),
        num_classes=dataset_for(config).info.num_classes,
        proximal_mu=proximal_mu,
    )
    return trainer_for(key)


def _local_ledger(context: Context, config: FederatedConfig, examples: int) -> PrivacyLedger:
    saved = context.state.config_records.get(LEDGER_KEY)
    if saved is not None:
        import json

        return PrivacyLedger.from_dict(json.loads(str(saved["json"])))
    return PrivacyLedger(unit="example", population=examples, sampling="poisson", delta=config.delta)


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise ConfigError(f"expected a number in the round config, got {value!r}")
    return float(value)


def make_client_app(config: FederatedConfig | None = None) -> ClientApp:
    """A ClientApp; ``config`` fixed (``fedmodel simulate``) or read from ``context.run_config`` (``flwr run``)."""
    app = ClientApp()

    def settings(context: Context) -> FederatedConfig:
        return config or FederatedConfig.from_mapping(dict(context.run_config))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        shard, partition_id = node_shard(cfg, context)
        incoming = msg.content.array_records["arrays"].to_numpy_ndarrays()
        round_config = msg.content.config_records["config"]
        mu = _number(round_config.get("proximal-mu", 0.0))
        server_round = int(_number(round_config.get("server-round", 0)))
        local_dp = cfg.local_dp_noise is not None
        trainer = _trainer(cfg, shard, proximal_mu=mu, local_dp=local_dp)
        ledger = _local_ledger(context, cfg, len(shard.x_train)) if local_dp else None
        weights, metrics = trainer.fit(
            incoming,
            shard,
            epochs=cfg.local_epochs,
            proximal_mu=mu,
            seed=hash((cfg.seed, partition_id, server_round)) % 2**31,
            ledger=ledger,
        )
        if ledger is not None:
            import json

            context.state.config_records[LEDGER_KEY] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
            metrics["local-epsilon"] = ledger.epsilon(cfg.delta, "rdp")
        reply = RecordDict(
            {
                "arrays": ArrayRecord(weights),
                "metrics": MetricRecord({"num-examples": len(shard.x_train), **metrics}),
            }
        )
        return Message(reply, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        shard, _ = node_shard(cfg, context)
        weights = msg.content.array_records["arrays"].to_numpy_ndarrays()
        if len(shard.x_eval) == 0:
            metrics: dict[str, Any] = {"num-examples": 0, "eval_loss": 0.0, "eval_accuracy": 0.0}
        else:
            trainer = _trainer(cfg, shard, proximal_mu=0.0, local_dp=False)
            result = trainer.evaluate(weights, shard.x_eval, shard.y_eval, task=dataset_for(cfg).info.task)
            metrics = {
                "num-examples": len(shard.x_eval),
                "eval_loss": result["loss"],
                "eval_accuracy": result["accuracy"],
            }
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
