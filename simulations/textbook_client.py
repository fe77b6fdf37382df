"""The textbook Flower 1.23 apps for a Keras model: a new model is built and compiled on every call.

This is the pattern of Flower's ``quickstart-tensorflow`` example with the Message API: the ClientApp's
``@app.train()`` calls ``load_model()`` (a fresh ``tf.keras.Sequential``, compiled), sets the incoming
weights, runs ``model.fit`` and replies with the weights; the ServerApp's ``main`` runs
``flwr.serverapp.strategy.FedAvg.start`` with a centralized ``evaluate_fn`` that also builds a fresh model.
It exists only as the reference point of ``simulations/bench_federated.py``; the data are fedmodel's shards
(cached per process), so the difference to fedmodel's client is the model rebuilding, not data loading.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import tensorflow as tf
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.shards import client_shard, dataset_for


@dataclasses.dataclass
class RoundClock:
    """Wall-clock marks taken by the ServerApp: the end of each centralized evaluation, and its length."""

    eval_end: dict[int, float] = dataclasses.field(default_factory=dict)
    eval_seconds: dict[int, float] = dataclasses.field(default_factory=dict)
    accuracy: dict[int, float] = dataclasses.field(default_factory=dict)
    monotonic_end: dict[int, float] = dataclasses.field(default_factory=dict)  # time.monotonic(), across processes

    def round_seconds(self) -> list[float]:
        """Seconds of rounds 1.. (train + aggregate + centralized evaluation), from consecutive marks."""
        rounds = sorted(r for r in self.eval_end if r > 0)
        return [self.eval_end[r] - self.eval_end[r - 1] for r in rounds if r - 1 in self.eval_end]


def load_model(*, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], lr: float) -> tf.keras.Model:
    """The tutorial's ``load_model``: a new compiled Keras model (the 2NN MLP for hidden (200, 200))."""
    layers: list[tf.keras.layers.Layer] = [tf.keras.layers.Flatten(input_shape=tuple(input_shape))]
    layers += [tf.keras.layers.Dense(width, activation="relu") for width in hidden]
    layers.append(tf.keras.layers.Dense(num_classes))
    model = tf.keras.Sequential(layers)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(lr),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def make_textbook_apps(config: FederatedConfig, clock: RoundClock) -> tuple[ServerApp, ClientApp]:
    """Textbook ServerApp (``FedAvg.start``) and ClientApp (new model per call) for ``config``'s workload."""
    data = dataset_for(config)
    hidden = tuple(int(w) for w in config.hparams.get("hidden", (200, 200)))

    def new_model() -> tf.keras.Model:
        return load_model(
            input_shape=data.info.input_shape, num_classes=data.info.num_classes, hidden=hidden, lr=config.client_lr
        )

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        shard = client_shard(config, int(context.node_config["partition-id"]))
        model = new_model()  # the textbook step: build and compile on every call
        model.set_weights(msg.content.array_records["arrays"].to_numpy_ndarrays())
        history = model.fit(
            shard.x_train,
            shard.y_train,
            epochs=config.local_epochs,
            batch_size=config.local_batch_size,
            shuffle=True,
            verbose=0,
        )
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "num-examples": len(shard.x_train),
            "train_loss": float(history.history["loss"][-1]),
        }
        reply = RecordDict({"arrays": ArrayRecord(model.get_weights()), "metrics": MetricRecord(metrics)})
        return Message(reply, reply_to=msg)

    server = ServerApp()

    def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        start = time.perf_counter()
        model = new_model()
        model.set_weights(arrays.to_numpy_ndarrays())
        loss, accuracy = model.evaluate(data.x_test, data.y_test, batch_size=512, verbose=0)
        end = time.perf_counter()
        clock.eval_end[server_round] = end
        clock.monotonic_end[server_round] = time.monotonic()
        clock.eval_seconds[server_round] = end - start
        clock.accuracy[server_round] = float(accuracy)
        return MetricRecord({"loss": float(loss), "accuracy": float(accuracy)})

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=config.clients_per_round / config.num_clients,
            fraction_evaluate=0.0,
            min_train_nodes=config.clients_per_round,
            min_available_nodes=config.num_clients,
        )
        initial = ArrayRecord(new_model().get_weights())
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=config.rounds, evaluate_fn=global_evaluate)

    return server, client
