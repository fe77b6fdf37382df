"""Pieces shared by strategy wrappers: evaluation passed to the wrapped strategy unchanged, and
:func:`array_record` for the replies a wrapper makes itself.

Evaluation of a wrapper goes to the wrapped strategy unchanged.

:class:`~fedmodel.federated.dp_strategy.ClientLevelDP` and :class:`~fedmodel.federated.norm_bound.NormBound`
change how training replies are aggregated and nothing else; they hold the wrapped strategy in
``self.strategy`` and inherit these pass-throughs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


def array_record(keys: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """Weights as an ``ArrayRecord`` under the global model's keys (for a reply the server makes itself)."""
    return ArrayRecord(OrderedDict((k, Array(np.asarray(v))) for k, v in zip(keys, arrays, strict=True)))


class EvaluatePassThrough(Strategy):
    """Evaluation and summary go to ``self.strategy`` (set by the subclass)."""

    strategy: Strategy

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
