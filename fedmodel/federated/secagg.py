"""Secure aggregation (Flower's SecAgg+) with the distributed discrete Gaussian, driven from fedmodel's round loop.

Who sees what: each client sees only its own update. It clips, rotates, rounds and noises it into integers
(:class:`~fedmodel.privacy.distributed_dp.DistributedDiscreteGaussian`), and Flower's ``secaggplus_mod``
masks them with pairwise and private masks (Bonawitz et al. 2017; Bell et al. 2020). The server receives
masked vectors that look uniformly random, and after the unmask stage learns only their sum modulo the
field: the sum of the cohort's noised updates. Clients send no metrics on this path.

Server side. Flower's :class:`~flwr.server.workflow.SecAggPlusWorkflow` runs on a ``LegacyContext`` with a
legacy strategy. :class:`SecureRound` drives its four stages one by one so fedmodel keeps its own round
loop: the cohort comes from fedmodel's sampler (fixed-size, OS entropy), a small legacy strategy
(:class:`_Cohort`) hands the workflow that cohort and catches the unmasked sum, and between collecting
the masked vectors and unmasking, the round aborts if fewer than ``min_survivors`` clients sent theirs
(their noise shares are what privacy counts; an aborted round is never unmasked and releases nothing).

Flower's SecAgg+ quantizes floats itself (``quantize``: clip to ``[-r, r]``, shift, stochastic rounding to
``[0, Q]``) and divides the sum by the summed weights. fedmodel's integers pass through exactly:
``Q = M`` and ``r = M / 2`` make the quantizer the identity shift on ``[0, M)``, every client reports
weight 1 against ``max_weight = 1``, and :func:`modular_sum` undoes the workflow's final affine map. The
field is ``2^32`` and ``M`` divides it, so the sum modulo ``M`` is exact even when the field wraps.

The client mod (:func:`make_secure_mod`) is installed on every ClientApp; it acts only on SecAgg+ messages,
so plain runs are unaffected.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common import recorddict_compat as compat
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

from fedmodel.federated.config import FederatedConfig
from fedmodel.privacy import randomness
from fedmodel.privacy.distributed_dp import DistributedDiscreteGaussian

#: The round config key carrying the public seed of the round's random rotation.
ROTATION_SEED = "secagg-rotation-seed"
#: SecAgg+'s field (Flower's largest modulus); every fedmodel modulus 2^bits divides it.
FIELD = 2**32


def mechanism_for(config: FederatedConfig, dim: int) -> DistributedDiscreteGaussian:
    """The round's mechanism, computed alike by the server and by every client from the run's settings.

    Clients build it from their own copy of the run config, never from what the server sends, so a server
    cannot ask them for less noise.
    """
    return DistributedDiscreteGaussian(
        clip=config.dp_clip,
        noise_multiplier=config.dp_noise or 0.0,
        dim=dim,
        cohort=config.clients_per_round,
        min_survivors=config.secagg_survivors,
        bits=config.secagg_bits,
    )


def modular_sum(aggregated: np.ndarray, *, survivors: int, modulus: int) -> np.ndarray:
    """The integers' sum modulo ``modulus`` from what Flower's workflow hands ``aggregate_fit``.

    The workflow computes ``(R - n M / 2) / n`` from the field sum ``R`` of ``n`` encodings (see the module
    docstring); ``R < n M < 2^32`` (checked by the mechanism), so ``R`` is recovered exactly.
    """
    field_sum = np.rint(np.asarray(aggregated, dtype=np.float64) * survivors + survivors * modulus / 2)
    return np.mod(field_sum.astype(np.int64), modulus)


@dataclass
class SecureOutcome:
    """One secure round: the noisy sum of clipped updates (model units) or why there is none."""

    total: list[np.ndarray] | None
    sampled: int
    survivors: int
    aborted: str | None = None


class _Cohort(LegacyStrategy):
    """The legacy strategy the workflow needs: it trains fedmodel's cohort and catches the unmasked sum."""

    def __init__(self, fit_ins: dict[int, FitIns], grid: Any) -> None:
        self.fit_ins = fit_ins
        self.grid = grid
        self.aggregate: np.ndarray | None = None
        self.survivors = 0

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [(GridClientProxy(node, self.grid, 0), ins) for node, ins in self.fit_ins.items()]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Any]]:
        if results:
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)[0]
            self.survivors = len(results)
        return None, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class _Polling:
    """The Grid the workflow talks to: fedmodel's faster ``send_and_receive``; ``seen`` keeps the replies."""

    def __init__(self, grid: Any, send: Callable[..., list[Message]], timeout: float) -> None:
        self.grid = grid
        self.send = send
        self.timeout = timeout
        self.seen: list[Message] = []

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = self.send(self.grid, list(messages), timeout=self.timeout)
        self.seen.extend(replies)
        return replies


class SecureRound:
    """Runs SecAgg+ rounds for a cohort of node ids (see the module docstring)."""

    def __init__(
        self,
        config: FederatedConfig,
        mechanism: DistributedDiscreteGaussian,
        *,
        send: Callable[..., list[Message]],
        timeout: float,
    ) -> None:
        self.config = config
        self.mechanism = mechanism
        self.send = send
        self.timeout = timeout
        self.workflow = SecAggPlusWorkflow(
            num_shares=config.secagg_shares,
            reconstruction_threshold=config.secagg_threshold,
            max_weight=1.0,
            clipping_range=float(mechanism.modulus // 2),
            quantization_range=mechanism.modulus,
            modulus_range=FIELD,
            timeout=timeout,
        )
        #: the last round's grid view, replies included, and rotation seed (public; tests read them)
        self.last_grid: _Polling | None = None
        self.last_rotation = 0

    def run(
        self,
        grid: Any,
        server_round: int,
        nodes: list[int],
        weights: list[np.ndarray],
        round_config: dict[str, Any],
    ) -> SecureOutcome:
        rotation = secrets.randbits(63)  # public once sent; fresh so no round's rotation is known in advance
        self.last_rotation = rotation
        config = {**round_config, ROTATION_SEED: rotation}
        ins = FitIns(ndarrays_to_parameters(weights), config)
        polling = _Polling(grid, self.send, self.timeout)
        self.last_grid = polling
        cohort = _Cohort({node: ins for node in nodes}, polling)
        context = LegacyContext(
            Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
            strategy=cohort,
            client_manager=SimpleClientManager(),
        )
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
        context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(weights)
        state = WorkflowState()
        sampled = len(nodes)
        if sampled < self.mechanism.min_survivors:
            return SecureOutcome(
                None, sampled, 0, f"{sampled} clients sampled, fewer than min survivors {self.mechanism.min_survivors}"
            )
        workflow = self.workflow
        for stage in (workflow.setup_stage, workflow.share_keys_stage, workflow.collect_masked_vectors_stage):
            if not stage(polling, context, state):  # type: ignore[arg-type]
                return SecureOutcome(None, sampled, len(state.active_node_ids), f"SecAgg+ {stage.__name__} failed")
        survivors = len(state.active_node_ids)
        if survivors < self.mechanism.min_survivors:
            return SecureOutcome(
                None,
                sampled,
                survivors,
                f"{survivors} of {sampled} clients sent masked vectors, fewer than secagg-min-survivors "
                f"{self.mechanism.min_survivors}; the sum was not unmasked",
            )
        if not workflow.unmask_stage(polling, context, state) or cohort.aggregate is None:  # type: ignore[arg-type]
            return SecureOutcome(None, sampled, survivors, "SecAgg+ unmask stage failed")
        integers = modular_sum(cohort.aggregate, survivors=cohort.survivors, modulus=self.mechanism.modulus)
        total = self.mechanism.decode(integers, rotation_seed=rotation, shapes=[w.shape for w in weights])
        return SecureOutcome(total, sampled, cohort.survivors)


# -- client side -------------------------------------------------------------------------------------


def make_secure_mod(settings: Callable[[Context], FederatedConfig]) -> Callable[..., Message]:
    """The ClientApp's train mod: SecAgg+ messages go through Flower's ``secaggplus_mod`` and the encoder."""

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if RECORD_KEY_CONFIGS not in msg.content.config_records:
            return call_next(msg, context)  # a plain round

        def encode(inner: Message, ctx: Context) -> Message:
            return _train_and_encode(inner, ctx, call_next, settings(ctx))

        return secaggplus_mod(msg, context, encode)

    return mod


def _train_and_encode(
    msg: Message, context: Context, train: Callable[[Message, Context], Message], config: FederatedConfig
) -> Message:
    """Train as in a plain round, then reply with only the encoded noisy update (weight 1, no metrics)."""
    fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    weights = parameters_to_ndarrays(fit_ins.parameters)
    round_config: dict[str, Any] = dict(fit_ins.config)
    rotation = round_config.pop(ROTATION_SEED, None)
    if not isinstance(rotation, int):
        raise ValueError(f"a SecAgg+ round needs the integer {ROTATION_SEED} in its config")
    msg.content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord(round_config)})
    reply = train(msg, context)
    trained = reply.content.array_records["arrays"].to_numpy_ndarrays()
    update = [np.asarray(t, np.float64) - np.asarray(w, np.float64) for t, w in zip(trained, weights, strict=True)]
    mechanism = mechanism_for(config, dim=sum(int(np.size(w)) for w in weights))
    encoded, _ = mechanism.encode(update, rotation_seed=rotation, rng=randomness.numpy_rng())
    shifted = encoded.astype(np.float64) - mechanism.modulus // 2  # Flower's quantizer shifts it back exactly
    result = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([shifted]), num_examples=1, metrics={})
    return Message(compat.fitres_to_recorddict(result, keep_input=True), reply_to=msg)
