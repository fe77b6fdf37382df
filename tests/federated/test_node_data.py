"""A node's own data file: the server's DataSpec, exporting shards, and checking a file before it joins.

Every error a node can hit has a code and a message the server may see: it must never carry the node's
local path (the path and low-level cause go to ``local_detail``, for the node's own log).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedmodel.federated.node_data as node_data
from fedmodel.errors import ConfigError
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.node_data import (
    DataSpec,
    NodeDataError,
    check_node_data,
    export_shards,
    load_node_data,
    verify_manifest,
)
from fedmodel.federated.shards import client_shard, dataset_for

CONFIG = FederatedConfig(model="mlp", dataset="digits", num_clients=3, clients_per_round=2, partition="iid")
DIGITS = DataSpec((8, 8, 1), 10, "classification", "float32")
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_shards(CONFIG, tmp_path_factory.mktemp("export") / "shards")


def _rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return [xi.tobytes() + yi.tobytes() for xi, yi in zip(x, y, strict=True)]


# -- DataSpec ---------------------------------------------------------------------------------------------------


def test_spec_of_dataset_and_config_round_trip() -> None:
    spec = DataSpec.of(dataset_for(CONFIG))
    assert spec == DIGITS
    config = spec.to_config()
    assert config == {
        "data-input-shape": "[8, 8, 1]",
        "data-num-classes": 10,
        "data-task": "classification",
        "data-x-dtype": "float32",
    }
    assert all(isinstance(v, int | float | str | bool) for v in config.values())
    # Round trip through Flower's ConfigRecord, alongside other round settings (ignored).
    from flwr.app import ConfigRecord

    record = ConfigRecord({**config, "server-round": 3, "proximal-mu": 0.0})
    assert DataSpec.from_config(record) == spec
    tokens = DataSpec((80,), 97, "next-token", "int32")
    assert DataSpec.from_config(json.loads(json.dumps(tokens.to_config()))) == tokens


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"data-input-shape": None}, "data-input-shape"),  # missing
        ({"data-input-shape": "[8, 8"}, "data-input-shape"),
        ({"data-input-shape": "[8, 0, 1]"}, "data-input-shape"),
        ({"data-input-shape": "[]"}, "data-input-shape"),
        ({"data-input-shape": "[8.5]"}, "data-input-shape"),
        ({"data-num-classes": 0}, "data-num-classes"),
        ({"data-num-classes": True}, "data-num-classes"),
        ({"data-num-classes": "10"}, "data-num-classes"),
        ({"data-task": "regression"}, "data-task"),
        ({"data-x-dtype": "object"}, "dtype"),
        ({"data-x-dtype": "complex64"}, "dtype"),
    ],
)
def test_spec_from_config_rejects_what_to_config_never_writes(change: dict[str, Any], mentions: str) -> None:
    config: dict[str, Any] = {**DIGITS.to_config(), **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ConfigError, match=mentions):
        DataSpec.from_config(config)


# -- export -----------------------------------------------------------------------------------------------------


def test_export_writes_each_clients_shard_and_a_manifest(exported: Path) -> None:
    out = exported.parent
    assert exported == out / "manifest.json"
    names = [f"client-{i:03d}.npz" for i in range(CONFIG.num_clients)]
    assert sorted(p.name for p in out.iterdir()) == [*names, "manifest.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["shards"]  # no temporary directory left beside it
    manifest = json.loads(exported.read_text())
    assert manifest["format"] == "fedmodel-node-data" and manifest["version"] == 1
    assert manifest["settings"]["dataset"] == "digits" and manifest["settings"]["partition"] == "iid"
    assert manifest["settings"]["num_clients"] == 3 and manifest["settings"]["seed"] == 0
    assert DataSpec.from_config(manifest["spec"]) == DIGITS
    assert [f["name"] for f in manifest["files"]] == names
    for i, entry in enumerate(manifest["files"]):
        raw = (out / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        shard = client_shard(CONFIG, i)
        with np.load(out / entry["name"], allow_pickle=False) as npz:
            assert sorted(npz.files) == sorted(ARRAYS)
            for name, expected in zip(ARRAYS, (shard.x_train, shard.y_train, shard.x_eval, shard.y_eval), strict=True):
                assert npz[name].dtype == expected.dtype
                np.testing.assert_array_equal(npz[name], expected)
        assert entry["num_train"] == len(shard.x_train) > 0 and entry["num_test"] == len(shard.x_eval) > 0


def test_exported_clients_are_disjoint_and_cover_the_training_set(exported: Path) -> None:
    data = dataset_for(CONFIG)
    train: list[bytes] = []
    everything: list[bytes] = []
    for i in range(CONFIG.num_clients):
        with np.load(exported.parent / f"client-{i:03d}.npz", allow_pickle=False) as npz:
            train += _rows(npz["x_train"], npz["y_train"])
            everything += _rows(npz["x_train"], npz["y_train"]) + _rows(npz["x_test"], npz["y_test"])
    assert len(set(train)) == len(train)  # no training example on two clients (digits has no duplicate rows)
    assert Counter(everything) == Counter(_rows(data.x_train, data.y_train))


def test_exported_files_load_as_the_clients_shards(exported: Path) -> None:
    for i in range(CONFIG.num_clients):
        shard = load_node_data(exported.parent / f"client-{i:03d}.npz", DIGITS)
        expected = client_shard(CONFIG, i)
        for got, want in zip(
            (shard.x_train, shard.y_train, shard.x_eval, shard.y_eval),
            (expected.x_train, expected.y_train, expected.x_eval, expected.y_eval),
            strict=True,
        ):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    summary = check_node_data(exported.parent / "client-000.npz", DIGITS)
    assert summary["train_examples"] == len(client_shard(CONFIG, 0).x_train)
    assert summary["test_examples"] == len(client_shard(CONFIG, 0).x_eval)
    assert summary["classes_present"] == list(range(10)) and summary["classes_missing"] == []
    assert summary["x_shape"] == [summary["train_examples"], 8, 8, 1]
    manifest = json.loads((exported).read_text())
    assert summary["sha256"] == manifest["files"][0]["sha256"]
    json.dumps(summary)  # printable as JSON


def test_verify_manifest_finds_changed_and_missing_files(exported: Path, tmp_path: Path) -> None:
    assert verify_manifest(exported.parent) == []
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in exported.parent.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    raw = bytearray((copy / "client-001.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "client-001.npz").write_bytes(bytes(raw))
    (copy / "client-002.npz").unlink()
    problems = verify_manifest(copy)
    assert len(problems) == 2
    assert problems[0].startswith("client-001.npz") and "sha256" in problems[0]
    assert problems[1].startswith("client-002.npz") and "missing" in problems[1]
    (copy / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="manifest"):
        verify_manifest(copy)


def test_export_refuses_a_non_empty_directory_and_leaves_it_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_shards(CONFIG, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        export_shards(CONFIG, tmp_path / "file")


def test_export_into_an_existing_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    manifest = export_shards(CONFIG, out)
    assert manifest == out / "manifest.json" and len(list(out.glob("client-*.npz"))) == 3
    assert verify_manifest(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize("interruption", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_export_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interruption: BaseException
) -> None:
    calls: list[int] = []

    def failing(config: FederatedConfig, partition_id: int, **kwargs: Any) -> Any:
        calls.append(partition_id)
        if len(calls) == 2:
            raise interruption
        return client_shard(config, partition_id, **kwargs)

    monkeypatch.setattr(node_data, "client_shard", failing)
    out = tmp_path / "new" / "parents" / "out"
    with pytest.raises(type(interruption)):
        export_shards(CONFIG, out)
    assert calls == [0, 1]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # neither a temporary directory nor the parents it created


# -- a node's file: every way it can be wrong ---------------------------------------------------------------------


def _good(n: int = 30, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.random((n, 8, 8, 1), dtype=np.float32), "y_train": np.arange(n) % 10}


def _npz(path: Path, **arrays: Any) -> Path:
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def _truncated(path: Path) -> Path:
    _npz(path, **_good())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _text(path: Path) -> Path:
    path.write_text("x_train,y_train\n0.1,3\n")
    return path


def _npy(path: Path) -> Path:
    with path.open("wb") as fh:
        np.save(fh, _good()["x_train"])
    return path


def _corrupted(path: Path) -> Path:
    _npz(path, **_good())
    raw = bytearray(path.read_bytes())
    raw[200:400] = bytes(200)  # inside x_train's data: a CRC mismatch when it is read
    path.write_bytes(bytes(raw))
    return path


def _with(**changes: Any) -> Any:
    def make(path: Path) -> Path:
        arrays: dict[str, Any] = {**_good(), **changes}
        return _npz(path, **{k: v for k, v in arrays.items() if v is not None})

    return make


GOOD = _good()
X, Y = GOOD["x_train"], GOOD["y_train"]
NAN = X.copy()
NAN[3, 2, 2, 0] = np.nan
INF_TEST = X[:5].copy()
INF_TEST[0, 0, 0, 0] = np.inf

BROKEN = {
    "truncated": (_truncated, "unreadable", "not a readable .npz"),
    "corrupted member": (_corrupted, "unreadable", "not a readable .npz"),
    "text file": (_text, "unreadable", "not a readable .npz"),
    "single .npy": (_npy, "unreadable", "not a readable .npz"),
    "object labels": (_with(y_train=np.array([{"label": 1}] * 30, dtype=object)), "unreadable", "y_train"),
    "object inputs": (_with(x_train=np.array([None] * 30, dtype=object)), "unreadable", "x_train"),
    "no labels": (_with(y_train=None), "missing-arrays", "y_train"),
    "no arrays": (_with(x_train=None, y_train=None, other=np.zeros(3)), "missing-arrays", "x_train"),
    "x_test without y_test": (_with(x_test=X[:5]), "missing-arrays", "y_test"),
    "empty": (_with(x_train=X[:0], y_train=Y[:0]), "empty", "0 examples"),
    "missing channel axis": (
        _with(x_train=X[..., 0]),
        "shape",
        "x_train has examples of shape (8, 8), the run's model",
    ),
    "flat vectors": (_with(x_train=X.reshape(30, 64)), "shape", "expects (8, 8, 1)"),
    "fewer labels": (_with(y_train=Y[:29]), "shape", "30 examples but y_train has 29"),
    "2-d labels": (_with(y_train=Y[:, None]), "shape", "y_train has shape (30, 1)"),
    "test shape": (_with(x_test=X[:5, :4], y_test=Y[:5]), "shape", "x_test"),
    "test lengths": (_with(x_test=X[:5], y_test=Y[:4]), "shape", "x_test has 5 examples but y_test has 4"),
    "scalar inputs": (_with(x_train=np.float32(1.0)), "shape", "single value"),
    "float labels": (_with(y_train=Y.astype(np.float64)), "dtype", "y_train holds float64"),
    "bool labels": (_with(y_train=Y > 4), "dtype", "y_train holds bool"),
    "string inputs": (_with(x_train=np.array(["a"] * 30)), "dtype", "x_train holds <U1"),
    "complex inputs": (_with(x_train=X.astype(np.complex64)), "dtype", "complex64"),
    "label == num_classes": (_with(y_train=np.where(Y == 9, 10, Y)), "label-range", "outside [0, 10)"),
    "negative label": (_with(y_train=Y - 1), "label-range", "outside [0, 10)"),
    "test label == num_classes": (_with(x_test=X[:5], y_test=np.full(5, 10)), "label-range", "y_test"),
    "NaN": (_with(x_train=NAN), "non-finite", "x_train holds NaN"),
    "Inf in test": (_with(x_test=INF_TEST, y_test=Y[:5]), "non-finite", "x_test"),
    "overflows float32": (_with(x_train=np.full((30, 8, 8, 1), 1e300)), "non-finite", "as float32"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_file_has_its_code_and_a_path_free_message(tmp_path: Path, case: str) -> None:
    make, code, fragment = BROKEN[case]
    node_dir = tmp_path / "private-node-dir"
    node_dir.mkdir()
    path = make(node_dir / "my-shard.npz")
    for call in (lambda: load_node_data(path, DIGITS), lambda: check_node_data(path, DIGITS)):
        with pytest.raises(NodeDataError) as info:
            call()
        err = info.value
        assert isinstance(err, ConfigError)
        assert err.code == code, err.local_detail
        assert err.code in node_data.CODES
        assert fragment in err.message, err.message
        for private in (str(tmp_path), "private-node-dir", "my-shard", os.sep + "tmp"):
            assert private not in err.message
        assert str(path) in err.local_detail and err.message in err.local_detail
        assert str(err) == err.local_detail


def test_a_missing_file_or_a_directory_is_missing(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.npz", tmp_path):
        with pytest.raises(NodeDataError) as info:
            load_node_data(path, DIGITS)
        assert info.value.code == "missing" and str(tmp_path) not in info.value.message
        assert str(path) in info.value.local_detail


def test_a_file_that_fits_another_model_does_not_fit_this_one(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x_train=X.reshape(30, 64), y_train=Y)
    assert load_node_data(path, DataSpec((64,), 10)).x_train.shape[1:] == (64,)
    with pytest.raises(NodeDataError, match=r"shape \(64,\), the run's model expects \(8, 8, 1\)"):
        load_node_data(path, DIGITS)
    with pytest.raises(NodeDataError) as info:
        load_node_data(path, DataSpec((64,), 3))
    assert info.value.code == "label-range" and "[0, 3)" in info.value.message


# -- what a good file becomes --------------------------------------------------------------------------------------


def test_without_a_test_split_a_seeded_fraction_is_held_out(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", **_good(50))
    a = load_node_data(path, DIGITS, eval_fraction=0.2, seed=3)
    b = load_node_data(path, DIGITS, eval_fraction=0.2, seed=3)
    c = load_node_data(path, DIGITS, eval_fraction=0.2, seed=4)
    assert (len(a.x_train), len(a.x_eval)) == (40, 10)
    np.testing.assert_array_equal(a.x_eval, b.x_eval)
    assert not np.array_equal(a.x_eval, c.x_eval)
    rows = Counter(_rows(a.x_train, a.y_train) + _rows(a.x_eval, a.y_eval))
    assert rows == Counter(_rows(*_good(50).values()))
    summary = check_node_data(path, DIGITS)
    assert summary["train_examples"] == 50 and summary["test_examples"] == 0
    with pytest.raises(ConfigError, match="eval_fraction"):
        load_node_data(path, DIGITS, eval_fraction=1.0)


def test_inputs_are_converted_to_the_models_dtype(tmp_path: Path) -> None:
    images = (X * 255).astype(np.uint8)
    shard = load_node_data(_npz(tmp_path / "u8.npz", x_train=images, y_train=Y.astype(np.uint8)), DIGITS)
    assert shard.x_train.dtype == np.float32 and float(shard.x_train.max()) <= 1.0
    assert shard.y_train.dtype == np.int64
    np.testing.assert_allclose(
        np.sort(np.concatenate([shard.x_train, shard.x_eval]).ravel()), np.sort(images.ravel() / 255), rtol=1e-6
    )
    doubles = load_node_data(_npz(tmp_path / "f64.npz", x_train=X.astype(np.float64), y_train=Y), DIGITS)
    assert doubles.x_train.dtype == np.float32


def test_next_token_files(tmp_path: Path) -> None:
    spec = DataSpec((6,), 5, "next-token", "int32")
    tokens = np.random.default_rng(0).integers(0, 5, size=(20, 7))
    good = _npz(tmp_path / "t.npz", x_train=tokens[:, :-1], y_train=tokens[:, 1:])
    shard = load_node_data(good, spec, eval_fraction=0.0)
    assert shard.x_train.dtype == np.int32 and shard.x_train.shape == (20, 6) and shard.y_train.shape == (20, 6)
    assert check_node_data(good, spec)["distinct_target_tokens"] == 5
    cases: dict[str, dict[str, np.ndarray]] = {
        "input-range": {"x_train": tokens[:, :-1] + 1, "y_train": tokens[:, 1:]},
        "label-range": {"x_train": tokens[:, :-1], "y_train": tokens[:, 1:] + 1},
        "dtype": {"x_train": tokens[:, :-1].astype(np.float32), "y_train": tokens[:, 1:]},
        "shape": {"x_train": tokens[:, :-1], "y_train": tokens[:, 0]},
    }
    for code, arrays in cases.items():
        with pytest.raises(NodeDataError) as info:
            load_node_data(_npz(tmp_path / f"{code}.npz", **arrays), spec)
        assert info.value.code == code, info.value.local_detail
        assert str(tmp_path) not in info.value.message


def test_spec_fields_are_plain_python_values() -> None:
    spec = DataSpec((np.int64(8), 8, 1), np.int64(10), "classification", "f4")  # type: ignore[arg-type]
    assert spec == DIGITS and type(spec.num_classes) is int and all(type(d) is int for d in spec.input_shape)
    bads: list[dict[str, Any]] = [{"input_shape": ()}, {"num_classes": 0}, {"task": "regression"}, {"x_dtype": "bool"}]
    for bad in bads:
        with pytest.raises(ConfigError):
            DataSpec(**{"input_shape": (8,), "num_classes": 2, **bad})
    with pytest.raises(ConfigError, match="token ids"):
        DataSpec((80,), 97, "next-token", "float32")
