"""SecAgg+ with the distributed discrete Gaussian: Flower's real secaggplus_mod and SecAggPlusWorkflow stages.

The clients here are real ClientApps (the fedmodel SecAgg mod around a train handler that returns a known
update) with their own persistent Contexts; :class:`LoopbackGrid` delivers the workflow's messages to them
in-process, as Flower's Grid does between processes (an exception in a client becomes an error reply).
The end-to-end run through Flower's simulation engine is in ``test_simulation_with_secure_aggregation``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.app import Error as FlowerError
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedmodel.errors import ConfigError
from fedmodel.federated import secagg
from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.secagg import SecureRound, make_secure_mod, mechanism_for

SHAPES = [(40, 20), (20,)]  # 820 parameters -> padded to 1024
DIM = 820


def _config(**overrides: Any) -> FederatedConfig:
    values: dict[str, Any] = {
        "num_clients": 8,
        "clients_per_round": 5,
        "dp_noise": 0.0,
        "dp_clip": 1.0,
        "client_sampling": "fixed-size",
        "secure_aggregation": True,
        "secagg_min_survivors": 4,
    }
    return FederatedConfig(**{**values, **overrides})


def _update(node: int) -> list[np.ndarray]:
    rng = np.random.default_rng(node)
    return [rng.normal(size=s) * 0.01 for s in SHAPES]  # norm ~0.29 < clip 1


class LoopbackGrid:
    """Delivers messages to in-process ClientApps (one Context per node, kept across the four stages)."""

    def __init__(self, config: FederatedConfig, nodes: list[int], failing: tuple[int, ...] = ()) -> None:
        self.apps = {n: _client_app(config, n, fail=n in failing) for n in nodes}
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in nodes
        }

    def push_and_pull(self, messages: list[Message]) -> list[Message]:
        replies = []
        for sent in messages:
            msg = copy.deepcopy(sent)  # each node gets its own copy, as over the wire (the mod pops keys)
            node = int(msg.metadata.dst_node_id)
            try:
                reply = self.apps[node](msg, self.contexts[node])
            except Exception as err:  # what Flower's runtime does with a raising ClientApp
                reply = Message(FlowerError(code=0, reason=str(err)), reply_to=msg)
            replies.append(reply)
        return replies


def _client_app(config: FederatedConfig, node: int, *, fail: bool) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[make_secure_mod(lambda _ctx: config)])
    def train(msg: Message, context: Context) -> Message:
        if fail:
            raise RuntimeError(f"node {node} dropped out")
        weights = msg.content.array_records["arrays"].to_numpy_ndarrays()
        trained = [w + u for w, u in zip(weights, _update(node), strict=True)]
        return Message(RecordDict({"arrays": ArrayRecord(trained)}), reply_to=msg)

    return app


def _send(grid: LoopbackGrid, messages: list[Message], *, timeout: float) -> list[Message]:
    return grid.push_and_pull(messages)


def _round(config: FederatedConfig, nodes: list[int], failing: tuple[int, ...] = ()) -> tuple[Any, SecureRound]:
    secure = SecureRound(config, mechanism_for(config, DIM), send=_send, timeout=10.0)
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    outcome = secure.run(LoopbackGrid(config, nodes, failing), 1, nodes, weights, {"server-round": 1})
    return outcome, secure


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in arrays])


def _masked_vectors(secure: SecureRound) -> dict[int, np.ndarray]:
    assert secure.last_grid is not None
    out = {}
    for reply in secure.last_grid.seen:
        record = reply.content.config_records[RECORD_KEY_CONFIGS] if not reply.has_error() else {}
        if Key.MASKED_PARAMETERS in record:
            arrays = [bytes_to_ndarray(b) for b in cast(list[bytes], record[Key.MASKED_PARAMETERS])]
            out[int(reply.metadata.src_node_id)] = np.concatenate([np.ravel(a) for a in arrays[1:]])
    return out


def test_unmasked_sum_equals_the_plain_sum_within_the_rounding_error() -> None:
    config = _config()
    nodes = [11, 12, 13, 14, 15]
    outcome, secure = _round(config, nodes)
    assert outcome.aborted is None and outcome.survivors == 5
    plain = sum(_flat(_update(n)) for n in nodes)
    mech = secure.mechanism
    # each client's rounding moves each rotated coordinate by < gamma: at most n * gamma * sqrt(d) in L2
    bound = len(nodes) * mech.gamma * math.sqrt(mech.padded_dim)
    err = float(np.linalg.norm(_flat(outcome.total) - plain))
    assert err <= bound
    assert err > 0  # it is a rounded sum, not the floats themselves


def test_the_server_sees_only_masked_vectors_and_no_metrics() -> None:
    config = _config()
    nodes = [21, 22, 23, 24, 25]
    outcome, secure = _round(config, nodes)
    assert outcome.total is not None
    masked = _masked_vectors(secure)
    assert sorted(masked) == nodes
    mech = secure.mechanism
    for node, vector in masked.items():
        # the encoding lives in [0, 2^20); the masked vector fills the 2^32 field uniformly
        assert vector.max() > 2**31 and abs(vector.mean() / 2**31 - 1) < 0.1
        # the client's own integers: its rotated, scaled update (up to rounding) -- not what the server got
        own, _ = mech.encode(_update(node), rotation_seed=secure.last_rotation, rng=np.random.default_rng(0))
        assert np.mean(np.mod(vector, mech.modulus) == own) < 0.01
        assert abs(np.corrcoef(vector.astype(float), _flat(_update(node)).tolist() + [0.0] * 204)[0, 1]) < 0.15
    for reply in secure.last_grid.seen if secure.last_grid else []:
        if reply.has_error():
            continue
        assert all(len(r) == 0 for r in reply.content.array_records.values())  # Flower clears the arrays
        for record in reply.content.metric_records.values():
            assert set(record) <= {"num_examples"}  # no training metric leaves a client
    # masked vectors alone sum to garbage until the unmask stage removes the private masks
    masked_sum = np.mod(sum(v.astype(np.int64) for v in masked.values()), 2**32)
    assert np.mean(np.mod(masked_sum, mech.modulus) < 2**10) < 0.01


def test_a_client_dropping_after_key_sharing_is_survived() -> None:
    config = _config()
    nodes = [31, 32, 33, 34, 35]
    outcome, secure = _round(config, nodes, failing=(33,))
    assert outcome.aborted is None and outcome.survivors == 4
    plain = sum(_flat(_update(n)) for n in nodes if n != 33)  # the dropped client's pairwise masks removed
    bound = 4 * secure.mechanism.gamma * math.sqrt(secure.mechanism.padded_dim)
    assert float(np.linalg.norm(_flat(outcome.total) - plain)) <= bound


def test_fewer_survivors_than_the_minimum_abort_before_unmasking() -> None:
    config = _config()
    nodes = [41, 42, 43, 44, 45]
    outcome, secure = _round(config, nodes, failing=(42, 44))
    assert outcome.total is None and outcome.survivors == 3
    assert "fewer than secagg-min-survivors 4" in str(outcome.aborted)
    seen = secure.last_grid.seen if secure.last_grid else []
    keys = {k for r in seen if not r.has_error() for k in r.content.config_records[RECORD_KEY_CONFIGS]}
    assert Key.MASKED_PARAMETERS in keys and Key.SHARE_LIST not in keys  # the unmask stage never ran


def test_the_noise_of_the_sum_has_the_intended_variance(monkeypatch: pytest.MonkeyPatch) -> None:
    # test mode: each client's generator seeded (real runs draw OS entropy)
    seeds = iter(range(100, 200))
    monkeypatch.setattr(secagg.randomness, "numpy_rng", lambda: np.random.default_rng(next(seeds)))
    config = _config(dp_noise=2.0, dp_clip=0.5)
    nodes = [51, 52, 53, 54, 55]
    outcome, secure = _round_with_zero_updates(config, nodes)
    mech = secure.mechanism
    total = _flat(outcome.total)
    # five shares, each N_Z(0, s^2) in integer units: variance 5 s^2 gamma^2 per coordinate (rotation keeps it)
    expected = 5 * mech.local_stddev**2
    assert np.var(total) == pytest.approx(expected, rel=0.12)
    assert abs(np.mean(total)) < 4 * math.sqrt(expected / len(total))
    # and what privacy counts: min survivors - 1 = 3 of them carry std z * c
    assert 3 * mech.local_stddev**2 == pytest.approx((2.0 * 0.5) ** 2)


def _round_with_zero_updates(config: FederatedConfig, nodes: list[int]) -> tuple[Any, SecureRound]:
    secure = SecureRound(config, mechanism_for(config, DIM), send=_send, timeout=10.0)
    grid = LoopbackGrid(config, nodes)
    for node in nodes:
        app = ClientApp()

        @app.train(mods=[make_secure_mod(lambda _ctx: config)])
        def train(msg: Message, context: Context) -> Message:
            return Message(RecordDict({"arrays": msg.content.array_records["arrays"]}), reply_to=msg)

        grid.apps[node] = app
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    return secure.run(grid, 1, nodes, weights, {}), secure


def test_config_refuses_what_secure_aggregation_cannot_do() -> None:
    with pytest.raises(ConfigError, match="fixed-size"):
        _config(client_sampling="poisson")
    with pytest.raises(ConfigError, match="needs dp-noise"):
        _config(dp_noise=None)
    with pytest.raises(ConfigError, match="individual updates"):
        _config(dp_noise=None, strategy="krum")
    with pytest.raises(ConfigError, match="secagg-min-survivors must be an integer in \\[2, clients-per-round=5\\]"):
        _config(secagg_min_survivors=6)
    with pytest.raises(ConfigError, match="audit-canaries"):
        _config(audit_canaries=10)
    assert _config(secagg_min_survivors=None).secagg_survivors == 5


@pytest.mark.slow
def test_simulation_with_secure_aggregation(tmp_path: Path) -> None:
    # Flower's simulation engine end to end; partition 0 raises while training (after key sharing), so
    # rounds that sample it survive a real dropout through SecAgg+'s mask reconstruction
    from fedmodel.federated.simulate import run_simulation

    run_dir = tmp_path / "run"
    config = FederatedConfig.from_mapping(
        {
            "model": "mlp",
            "dataset": "digits",
            "num-clients": 6,
            "clients-per-round": 5,
            "rounds": 4,
            "dp-noise": 0.1,
            "dp-clip": 1.0,
            "local-epochs": 3,
            "client-sampling": "fixed-size",
            "secure-aggregation": True,
            "secagg-min-survivors": 4,
            "fraction-evaluate": 0.0,
            "fail-partitions": "0",
            "run-dir": str(run_dir),
        }
    )
    run_simulation(config)
    record = json.loads((run_dir / "run.json").read_text())
    privacy = record["privacy"]
    assert privacy["mechanism"].startswith("distributed discrete Gaussian")
    assert privacy["secure_aggregation"]["counted_shares"] == 3
    assert math.isfinite(privacy["epsilon"]["rdp"]) and privacy["epsilon_proposition_14"] <= privacy["epsilon"]["rdp"]
    rounds = record["rounds"]
    assert len(rounds) == 4 and all(r["survivors"] in (4, 5) for r in rounds)
    assert any(r["survivors"] == 4 for r in rounds) or all(r["sampled"] == 5 for r in rounds)
    assert record["test_metrics"]["accuracy"] > 0.3  # it learns through masking and noise
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    assert sum(e["count"] for e in ledger["entries"]) == 4
    assert "who sees what" in (run_dir / "report.md").read_text()
    diagnostics = json.loads((run_dir / "diagnostics.json").read_text())
    assert all(set(d) <= {"round", "replies", "failures", "seconds"} for d in diagnostics["rounds"])


def test_the_budget_stops_secure_rounds_before_target_epsilon() -> None:
    from fedmodel.federated.server import budget_allows, cohort_sampling, new_state

    config = _config(dp_noise=1.0, target_epsilon=20.0, delta=1e-3)
    weights = [np.zeros(s, np.float32) for s in SHAPES]
    state = new_state(config, weights)
    assert state.ledger is not None
    mech = mechanism_for(config, DIM)
    rounds = 0
    while budget_allows(config, state):
        state.ledger.record_release(mech.event(), cohort_sampling(config), epoch=rounds + 1)
        rounds += 1
    assert rounds >= 1
    assert state.ledger.epsilon(1e-3, "rdp") <= 20.0  # fail closed: every charged round fit
    state.ledger.record_release(mech.event(), cohort_sampling(config), epoch=rounds + 1)
    assert state.ledger.epsilon(1e-3, "rdp") > 20.0  # and one more would not have


def test_runs_written_before_a_setting_existed_still_resume(tmp_path: Path) -> None:
    # run.json of an older fedmodel lacks the secure-aggregation keys; with their defaults it is the same run
    from fedmodel.federated.server import check_run_dir

    config = FederatedConfig(num_clients=4, clients_per_round=2)
    saved = {k: v for k, v in json.loads(json.dumps(config.to_dict(), default=list)).items() if "secagg" not in k}
    saved.pop("secure_aggregation")
    (tmp_path / "run.json").write_text(json.dumps({"kind": "federated", "config": saved}))
    check_run_dir(tmp_path, config)  # no error
    with pytest.raises(ConfigError, match="secure_aggregation"):
        check_run_dir(tmp_path, _config(num_clients=4, clients_per_round=2, secagg_min_survivors=2))
