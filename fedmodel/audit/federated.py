"""Client canaries in a federated run: replies fabricated in the server's round loop, scored at the end.

A canary client has no data: its update is its secret random direction at the norm a real update is
clipped to (client-level DP: the round's clip ``C``; without DP: the median norm of the round's real
updates), so the server can make its reply itself; nothing about a canary crosses the network. Each round,
every *included* canary takes part with the real clients' probability ``q = clients-per-round /
num-clients`` (drawn from OS entropy), and its reply is aggregated exactly like a real one: the same
clipping, the same single noise draw on the sum. The ledger is untouched: canaries are extra clients,
and the guarantee per client (the ledger's unit) is the same for them as for real clients.

At the end each canary is scored by the cosine between the model's total change (final minus initial
weights) and its direction (Andrew et al. 2024); :func:`fedmodel.audit.onerun.audit_scores` turns the
scores and the secret coins into a lower bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedmodel.atomic import atomic_write_with
from fedmodel.audit import onerun
from fedmodel.audit.canaries import SECRET_DIR, ClientCanaries
from fedmodel.federated.weights import delta, global_norm
from fedmodel.federated.wrapper import array_record

INITIAL_WEIGHTS = "initial_weights.npz"
SCORE = "cosine of the model's total change with the canary's direction"


class CanaryClients:
    """Make the included canaries' replies each round; score every canary on the final model."""

    def __init__(self, canaries: ClientCanaries, *, rate: float, initial: list[np.ndarray]) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"canary participation rate must be in (0, 1], got {rate!r}")
        self.canaries = canaries
        self.rate = rate
        self.initial = [np.asarray(w) for w in initial]

    @classmethod
    def for_run(cls, run_dir: Path, n: int, *, rate: float, initial: list[np.ndarray]) -> CanaryClients:
        """The run's canaries: loaded from ``run_dir/audit`` (a resumed run) or drawn fresh and saved there."""
        folder = Path(run_dir) / SECRET_DIR
        if (folder / "client_canaries.json").exists():
            loaded = cls.load(run_dir, rate=rate)
            if loaded.canaries.n != n:
                raise ValueError(f"{folder} holds {loaded.canaries.n} client canaries, the run asks for {n}")
            return loaded
        canaries = ClientCanaries(n)
        atomic_write_with(folder / INITIAL_WEIGHTS, lambda f: np.savez(f, *initial))
        canaries.save(run_dir)
        return cls(canaries, rate=rate, initial=initial)

    @classmethod
    def load(cls, run_dir: Path, *, rate: float = 1.0) -> CanaryClients:
        """The canaries and initial weights saved in ``run_dir/audit``."""
        with np.load(Path(run_dir) / SECRET_DIR / INITIAL_WEIGHTS, allow_pickle=False) as saved:
            initial = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        return cls(ClientCanaries.load(run_dir), rate=rate, initial=initial)

    def replies(self, *, current: ArrayRecord, real: list[Message], clip: float | None) -> list[Message]:
        """This round's canary replies, shaped like the real ones (same record and metric names)."""
        keys = list(current.keys())
        weights = current.to_numpy_ndarrays()
        good = [r for r in real if not r.has_error() and "arrays" in r.content.array_records]
        if clip is not None:
            scale = float(clip)
        elif good:  # no DP: as large as a typical real update of this round
            norms = [global_norm(delta(r.content.array_records["arrays"].to_numpy_ndarrays(), weights)) for r in good]
            scale = float(np.median(norms))
        else:
            return []
        template = _metric_names(good)
        examples = _median_examples(good)
        out = []
        shapes = [w.shape for w in weights]
        for index in self.canaries.participants(self.rate):
            direction = self.canaries.direction(index, shapes)
            arrays = [(w + scale * d).astype(w.dtype) for w, d in zip(weights, direction, strict=True)]
            record = array_record(keys, arrays)
            metrics: dict[str, Any] = {name: 0.0 for name in template}
            metrics["num-examples"] = examples
            out.append(
                Message(
                    RecordDict(
                        {
                            "arrays": record,
                            "metrics": MetricRecord(metrics),
                        }
                    ),
                    dst_node_id=0,
                    message_type="train",
                )
            )
        return out

    def audit(self, final: list[np.ndarray], *, delta_: float) -> onerun.OneRunAudit:
        """The one-run lower bound from the canaries' cosines with the model's total change."""
        change = [np.asarray(f, dtype=np.float64) - i for f, i in zip(final, self.initial, strict=True)]
        scores = self.canaries.scores(change)
        return onerun.audit_scores(scores, self.canaries.included, delta=delta_)


def _metric_names(replies: list[Message]) -> list[str]:
    for reply in replies:
        for record in reply.content.metric_records.values():
            return [name for name in record if name != "num-examples"]
    return []


def _median_examples(replies: list[Message]) -> int:
    counts = []
    for reply in replies:
        for record in reply.content.metric_records.values():
            value = record.get("num-examples")
            if isinstance(value, int | float):
                counts.append(float(value))
    return max(1, round(float(np.median(counts)))) if counts else 1
