"""The evaluation half of a strategy wrapper: passed to the wrapped strategy unchanged.

:class:`~fedmodel.federated.dp_strategy.ClientLevelDP` and :class:`~fedmodel.federated.norm_bound.NormBound`
change how training replies are aggregated and nothing else; they hold the wrapped strategy in
``self.strategy`` and inherit these pass-throughs.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


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
