"""The ClientApp on a deployed node: its own file only, the model described by the server, safe errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

import fedmodel.federated.shards as shards
from fedmodel.federated.client_app import ClientError, make_client_app
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.local import TrainerKey, trainer_for
from fedmodel.federated.node_data import DataSpec
from fedmodel.federated.shards import client_shard, dataset_for

CONFIG = FederatedConfig(model="mlp", hparams={"hidden": [8]}, dataset="digits", num_clients=3, clients_per_round=2)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DataSpec, list[np.ndarray]]:
    spec = DataSpec.of(dataset_for(CONFIG))
    shard = client_shard(CONFIG, 0)
    path = tmp_path_factory.mktemp("node") / "client-000.npz"
    np.savez(path, x_train=shard.x_train, y_train=shard.y_train)
    key = TrainerKey.of(CONFIG, input_shape=spec.input_shape, num_classes=spec.num_classes, proximal_mu=0.0)
    return path, spec, trainer_for(key).model.get_weights()


def _train(spec: DataSpec, weights: list[np.ndarray], data_path: str) -> Message:
    message = Message(
        RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({**spec.to_config(), "server-round": 1})}),
        dst_node_id=5,
        message_type="train",
    )
    context = Context(run_id=1, node_id=5, node_config={"data-path": data_path}, state=RecordDict(), run_config={})
    return make_client_app(CONFIG)(message, context)


def test_a_node_trains_on_its_own_file_without_opening_the_servers_dataset(node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path, spec, weights = node

    def server_dataset(*args: object, **kwargs: object) -> None:
        raise AssertionError("the client opened the server's dataset")

    monkeypatch.setattr(shards, "_dataset", server_dataset)
    reply = _train(spec, weights, str(path))
    assert not reply.has_error()
    # What leaves the node: weight-shaped arrays and scalar metrics, nothing else.
    assert set(reply.content.array_records) == {"arrays"} and not reply.content.config_records
    sent = reply.content.array_records["arrays"].to_numpy_ndarrays()
    assert [a.shape for a in sent] == [w.shape for w in weights]
    assert not all(np.array_equal(a, w) for a, w in zip(sent, weights, strict=True))  # it trained
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 389 and metrics["node-local-data"] == 1  # so the report can say so
    assert set(metrics) == {"num-examples", "train_loss", "train_accuracy", "node-local-data"}


def test_a_node_with_bad_data_fails_with_a_code_and_no_local_path(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, spec, weights = node
    bad = tmp_path / "secret-dir" / "client.npz"
    bad.parent.mkdir()
    np.savez(
        bad, x_train=np.zeros((5, *spec.input_shape), np.float32), y_train=np.full(5, 10)
    )  # label 10 of 10 classes
    for path, code in ((bad, "label-range"), (tmp_path / "secret-dir" / "absent.npz", "missing")):
        with pytest.raises(ClientError) as caught:
            _train(spec, weights, str(path))
        assert caught.value.code == code and str(caught.value).startswith(f"fedmodel/{code}: ")
        assert "secret-dir" not in str(caught.value) and str(tmp_path) not in str(caught.value)
