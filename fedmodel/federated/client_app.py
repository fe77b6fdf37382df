"""The Flower ClientApp's logic: open only this node's shard, train the cached model, reply with weights.

What leaves the client: the model's weights (same arrays, shapes and dtypes as it received) plus the
number of examples and scalar metrics. Never examples or labels. With secure aggregation, only the
masked, noised integer encoding of its update (:mod:`.secagg`), and no metrics. What the model looks like (input
shape, classes, task) comes from the server in every message (:class:`~.node_data.DataSpec`): a
deployed client opens only its own data file, never the server's dataset.

A client that cannot take part replies with an error ``fedmodel/CODE: message`` (e.g.
``fedmodel/label-range: ...``): a short code and a message without local paths or tracebacks, which the
server logs and counts. The full detail stays in the node's own log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmodel.errors import ConfigError
from fedmodel.federated.attacks import flip_labels, poison_update
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.devices import configure_devices
from fedmodel.federated.local import TrainerKey, trainer_for
from fedmodel.federated.node_data import DataSpec, NodeDataError, load_node_data
from fedmodel.federated.secagg import make_secure_mod
from fedmodel.federated.shards import Shard, client_shard
from fedmodel.privacy.ledger import PrivacyLedger

LEDGER_KEY = "fedmodel-local-dp-ledger"
_log = logging.getLogger("fedmodel.client")


class ClientError(RuntimeError):
    """Why this client cannot take part, as the server may see it: a code and a path-free message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"fedmodel/{code}: {message}")
        self.code = code


def node_shard(config: FederatedConfig, context: Context, spec: DataSpec) -> tuple[Shard, int]:
    """This node's data: ``node_config["data-path"]`` (deployment) or its simulation partition."""
    node = context.node_config
    if "data-path" in node:
        return load_node_data(str(node["data-path"]), spec, seed=config.seed), int(node.get("partition-id", 0))
    if "partition-id" not in node:
        raise ClientError("node-config", "node_config needs data-path (a local .npz) or partition-id (simulation)")
    partition_id = int(node["partition-id"])
    if partition_id in config.failing_partitions:
        raise ClientError("fault-injection", f"partition {partition_id} fails (fail-partitions)")
    return client_shard(config, partition_id), partition_id


def _trainer(config: FederatedConfig, spec: DataSpec, *, proximal_mu: float, local_dp: bool) -> Any:
    key = TrainerKey.of(
        config if local_dp else config.without_local_dp(),
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        proximal_mu=proximal_mu,
    )
    return trainer_for(key)


def _data_source(context: Context) -> dict[str, int]:
    """``{"node-local-data": 1}`` when this node trained on its own file (so the server's report can say so)."""
    return {"node-local-data": 1} if "data-path" in context.node_config else {}


def _guarded(handler: Any) -> Any:
    """Turn anything a handler raises into a :class:`ClientError` (the detail goes to the node's log only)."""

    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except ClientError:
            raise
        except NodeDataError as err:
            _log.error("node data: %s", err.local_detail)
            raise ClientError(err.code, err.message) from None
        except ConfigError as err:
            _log.error("configuration: %s", err)
            raise ClientError("config", "the run's settings are invalid on this node (see its log)") from None
        except Exception as err:
            _log.exception("client failed")
            raise ClientError("client-failed", f"{type(err).__name__} while training (see the node's log)") from None

    return wrapped


def _local_ledger(context: Context, config: FederatedConfig, examples: int) -> PrivacyLedger:
    saved = context.state.config_records.get(LEDGER_KEY)
    if saved is not None:
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
        configure_devices(context.node_config)
        return config or FederatedConfig.from_mapping(dict(context.run_config))

    def spec_of(msg: Message) -> DataSpec:
        return DataSpec.from_config(msg.content.config_records["config"])

    @app.train(mods=[make_secure_mod(settings)])  # acts on SecAgg+ rounds only (secure-aggregation)
    @_guarded
    def train(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        spec = spec_of(msg)
        shard, partition_id = node_shard(cfg, context, spec)
        incoming = msg.content.array_records["arrays"].to_numpy_ndarrays()
        round_config = msg.content.config_records["config"]
        mu = _number(round_config.get("proximal-mu", 0.0))
        server_round = int(_number(round_config.get("server-round", 0)))
        local_dp = cfg.local_dp_noise is not None
        attack = cfg.attack_config
        malicious = partition_id in attack.malicious(cfg.num_clients, cfg.seed)  # simulated attacker
        if malicious and attack.kind == "label-flip":
            shard = dataclasses.replace(shard, y_train=flip_labels(shard.y_train, spec.num_classes))
        trainer = _trainer(cfg, spec, proximal_mu=mu, local_dp=local_dp)
        ledger = _local_ledger(context, cfg, len(shard.x_train)) if local_dp else None
        weights, metrics = trainer.fit(
            incoming,
            shard,
            epochs=cfg.local_epochs,
            proximal_mu=mu,
            seed=hash((cfg.seed, partition_id, server_round)) % 2**31,
            ledger=ledger,
        )
        if malicious:
            rng = np.random.default_rng([cfg.seed, partition_id, server_round])
            weights = poison_update(weights, incoming, kind=attack.kind, scale=attack.scale, rng=rng)
        if ledger is not None:
            context.state.config_records[LEDGER_KEY] = ConfigRecord({"json": json.dumps(ledger.to_dict())})
            metrics["local-epsilon"] = ledger.epsilon(cfg.delta, "rdp")
        reply = RecordDict(
            {
                "arrays": ArrayRecord(weights),
                "metrics": MetricRecord({"num-examples": len(shard.x_train), **metrics, **_data_source(context)}),
            }
        )
        return Message(reply, reply_to=msg)

    @app.evaluate()
    @_guarded
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = settings(context)
        spec = spec_of(msg)
        shard, _ = node_shard(cfg, context, spec)
        weights = msg.content.array_records["arrays"].to_numpy_ndarrays()
        if len(shard.x_eval) == 0:
            metrics: dict[str, Any] = {"num-examples": 0, "eval_loss": 0.0, "eval_accuracy": 0.0}
        else:
            trainer = _trainer(cfg, spec, proximal_mu=0.0, local_dp=False)
            result = trainer.evaluate(weights, shard.x_eval, shard.y_eval, task=spec.task)
            metrics = {
                "num-examples": len(shard.x_eval),
                "eval_loss": result["loss"],
                "eval_accuracy": result["accuracy"],
            }
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
