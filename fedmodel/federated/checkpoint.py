"""The server's resume point: versioned arrays + JSON, written after every round, never a pickle.

Layout inside the run directory::

    checkpoint/
        state.json              # format, version, round, history, DP wrapper state, ledger; written last
        arrays-round-00005.npz  # weights/NNN and the strategy's optimizer moments strategy/ATTR/KEY

What is *not* in it, on purpose: the noise and sampling generator (a restarted server draws fresh OS
entropy: a saved generator would let anyone holding the file replay, and subtract, later rounds' noise),
and any per-client value (update norms, which clients were sampled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.serverapp.strategy import Strategy

from fedmodel.atomic import atomic_write, atomic_write_with
from fedmodel.errors import ConfigError
from fedmodel.federated.dp_strategy import ClientLevelDP
from fedmodel.privacy.ledger import PrivacyLedger

DIRECTORY = "checkpoint"
STATE = "state.json"
FORMAT = "fedmodel.federated_checkpoint"
VERSION = 1
LEGACY_PICKLE = "checkpoint.pkl"
#: Server-optimizer attributes of Flower's strategies (FedOpt: FedAdam, FedYogi, FedAdagrad).
STRATEGY_ARRAYS = ("current_arrays", "m_t", "v_t")


def inner(strategy: Strategy) -> Strategy:
    """The strategy inside a client-level DP or norm-bound wrapper (or the strategy itself)."""
    from fedmodel.federated.norm_bound import NormBound

    return strategy.strategy if isinstance(strategy, ClientLevelDP | NormBound) else strategy


def strategy_arrays(strategy: Strategy) -> dict[str, np.ndarray]:
    """The inner strategy's optimizer state as flat ``strategy/ATTR/KEY`` arrays."""
    out: dict[str, np.ndarray] = {}
    for attr in STRATEGY_ARRAYS:
        value = getattr(inner(strategy), attr, None)
        if isinstance(value, dict):
            for key, array in value.items():
                out[f"strategy/{attr}/{key}"] = np.asarray(array)
    return out


def restore_strategy_arrays(strategy: Strategy, arrays: dict[str, np.ndarray]) -> None:
    target = inner(strategy)
    found: dict[str, dict[str, np.ndarray]] = {}
    for name, array in arrays.items():
        _, attr, key = name.split("/", 2)
        if attr not in STRATEGY_ARRAYS or not hasattr(target, attr):
            raise ConfigError(f"checkpoint holds {attr!r} state that strategy {type(target).__name__} does not have")
        found.setdefault(attr, {})[key] = array
    for attr, value in found.items():
        setattr(target, attr, value)


def save(
    run_dir: Path,
    *,
    round_: int,
    weights: list[np.ndarray],
    strategy: Strategy,
    ledger: PrivacyLedger | None,
    document: dict[str, Any],
) -> None:
    """Write the resume point after round ``round_``: arrays first, then ``state.json`` that names them."""
    root = run_dir / DIRECTORY
    root.mkdir(parents=True, exist_ok=True)
    name = f"arrays-round-{round_:05d}.npz"
    payload = {f"weights/{i:03d}": np.asarray(w) for i, w in enumerate(weights)} | strategy_arrays(strategy)
    atomic_write_with(root / name, lambda fh: np.savez(fh, **payload))
    state = {
        "format": FORMAT,
        "version": VERSION,
        "round": round_,
        "arrays": name,
        "weights": len(weights),
        "dp": strategy.state() if isinstance(strategy, ClientLevelDP) else None,
        "ledger": ledger.to_dict() if ledger is not None else None,
        **document,
    }
    atomic_write(root / STATE, json.dumps(state, indent=1) + "\n")
    for old in root.glob("arrays-round-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load(run_dir: Path) -> tuple[dict[str, Any], list[np.ndarray], dict[str, np.ndarray]] | None:
    """``(state, weights, strategy arrays)`` of the last finished round, or None for a new run."""
    root = run_dir / DIRECTORY
    if (run_dir / LEGACY_PICKLE).is_file() and not (root / STATE).is_file():
        raise ConfigError(
            f"{run_dir / LEGACY_PICKLE} is a pickled checkpoint from an older fedmodel (it may hold the noise "
            "generator's state); it cannot be resumed: start a new run-dir"
        )
    if not (root / STATE).is_file():
        return None
    try:
        state = json.loads((root / STATE).read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{root / STATE} is not valid JSON: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ConfigError(
            f"{root / STATE} is not a version-{VERSION} fedmodel federated checkpoint "
            f"(format {state.get('format') if isinstance(state, dict) else None!r})"
        )
    path = root / str(state["arrays"])
    if not path.is_file():
        raise ConfigError(f"checkpoint arrays {path} are missing")
    with np.load(path) as npz:
        weights = [npz[f"weights/{i:03d}"] for i in range(int(state["weights"]))]
        extra = {k: npz[k] for k in npz.files if k.startswith("strategy/")}
    return state, weights, extra
