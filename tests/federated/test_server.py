"""Server loop pieces: the budget check before a round, and the ledger of a DP run."""

from __future__ import annotations

import numpy as np

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.server import _budget_allows, new_state
from fedmodel.privacy.accounting import dp_event, epsilon


def test_budget_check_stops_before_the_round_that_would_exceed_the_target() -> None:
    config = FederatedConfig(num_clients=20, clients_per_round=10, dp_noise=1.0, target_epsilon=3.0, delta=1e-3)
    state = new_state(config, [np.zeros(3)])
    assert state.ledger is not None and state.ledger.unit == "client" and state.ledger.sampling == "fixed-size"
    rounds = 0
    while _budget_allows(config, state):
        state.ledger.record(noise_multiplier=1.0, sampling_rate=0.5, epoch=rounds + 1)
        rounds += 1
        assert rounds < 1000

    def eps(steps: int) -> float:
        return epsilon(dp_event(noise_multiplier=1.0, sampling_rate=0.5, steps=steps), delta=1e-3, accountant="rdp")

    spent, one_more = eps(rounds), eps(rounds + 1)
    assert rounds >= 1 and spent <= 3.0 < one_more


def test_runs_without_client_dp_have_no_ledger_and_no_budget() -> None:
    state = new_state(FederatedConfig(num_clients=4, clients_per_round=2), [np.zeros(3)])
    assert state.ledger is None
    assert _budget_allows(FederatedConfig(num_clients=4, clients_per_round=2), state)
