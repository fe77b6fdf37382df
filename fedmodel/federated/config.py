"""The configuration of a federated run: one frozen dataclass, read from Flower's run config or TOML.

Keys are kebab-case at the edge (``local-epochs`` in ``pyproject.toml`` / TOML / ``--set``) and
snake_case here. Unknown keys and bad values are rejected with a message naming them.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

from fedmodel.errors import ConfigError
from fedmodel.federated.attacks import AttackConfig, AttackName

StrategyName = Literal[
    "fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg", "krum", "multikrum"
]
PartitionName = Literal["iid", "dirichlet", "shards", "quantity", "natural"]
ClientOptimizer = Literal["sgd", "momentum", "adam"]
ClientSamplingName = Literal["poisson", "fixed-size"]
STRATEGIES: tuple[str, ...] = get_args(StrategyName)
# Strategies whose aggregate is a (weighted) mean, which client-level DP's clipped noisy sum replaces.
DP_COMPATIBLE: tuple[str, ...] = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FederatedConfig:
    """A federated experiment.

    Attributes
    ----------
    num_clients, clients_per_round, rounds:
        Population, clients per round, rounds. Without client-level DP Flower samples exactly
        ``clients_per_round``; with it, see ``client_sampling``.
    partition, alpha, shards_per_client:
        How the training set is split among clients (see :mod:`fedmodel.data.partition`).
    local_epochs, local_batch_size, client_optimizer, client_lr:
        Local training on each client (McMahan et al. 2017: E = 5, B = 10).
    strategy, server_lr, proximal_mu, trim_beta, krum_byzantine, krum_keep:
        Server aggregation; ``server_lr`` is FedOpt's eta (FedAdam/FedYogi/FedAdagrad, Reddi et al. 2021),
        ``proximal_mu`` FedProx's mu (Li et al. 2020); robust aggregation (docs/robustness.md):
        ``trim_beta`` for FedTrimmedAvg, ``krum_byzantine`` (assumed attackers) for Krum and Multi-Krum,
        ``krum_keep`` (updates averaged) for Multi-Krum.
    norm_bound:
        Clip every client's update to this L2 norm before aggregation, without noise (runs without
        client-level DP; with it, ``dp_clip`` bounds updates already). ``None`` = off.
    attack, attack_fraction, attack_scale:
        Simulated malicious clients (:mod:`fedmodel.federated.attacks`): ``sign-flip``, ``scale``,
        ``noise``, ``nan`` or ``label-flip`` by ``attack_fraction`` of the clients. ``none`` = off.
    dp_noise, dp_clip, dp_adaptive, dp_target_quantile, dp_clip_lr, target_epsilon, delta:
        Client-level DP (DP-FedAvg, McMahan et al. 2018): each client's update is clipped to ``dp_clip``
        and the sum gets Gaussian noise with std ``dp_noise * dp_clip``. With ``dp_adaptive`` the clip
        follows the ``dp_target_quantile`` of update norms (Andrew et al. 2021). ``target_epsilon`` stops
        the run before the round that would exceed it.
    client_sampling:
        With client-level DP: ``poisson`` (each client joins each round with probability
        ``q = clients_per_round / num_clients``; accounted exactly) or ``fixed-size`` (exactly
        ``clients_per_round``; accounted with the sampling-without-replacement RDP bound under
        replace-one-client adjacency). Drawn from OS entropy, never from ``seed``.
    local_dp_noise, local_dp_clip:
        Example-level DP-SGD on each client (local DP), reported per client.
    min_available_clients, available_timeout, reply_timeout, min_replies:
        Quorum (deployments): a round starts once ``min_available_clients`` (default ``clients_per_round``)
        nodes are connected, waiting at most ``available_timeout`` seconds (then the run stops as failed);
        replies are awaited at most ``reply_timeout`` seconds; a round in which fewer than
        ``min(min_replies, sampled)`` sampled clients replied is recorded as failed and leaves the model
        unchanged (with client-level DP it is still charged to the ledger); ``min_replies = 0`` counts
        every round.
    dp_outputs_only:
        Write and print only what the privacy ledger covers (model weights, ledger, noised aggregates,
        server-side test metrics); skip federated evaluation and every diagnostic computed on the
        clients' data without noise (``diagnostics.json``).
    audit_canaries:
        One-run privacy audit with this many canary clients (:mod:`fedmodel.audit.federated`): each is
        secretly included with probability 1/2, takes part in a round with the real clients' probability
        and sends a secret random direction; ``audit.json`` gets a client-level epsilon lower bound.
        0 = no audit.
    secure_aggregation, secagg_bits, secagg_min_survivors, secagg_shares, secagg_threshold:
        SecAgg+ with the distributed discrete Gaussian (:mod:`fedmodel.federated.secagg`, docs/secure_aggregation.md):
        the server sees only the sum of the cohort's noised, masked updates. Needs client-level DP
        (``dp_noise``; 0 = masking only, no DP) with ``client_sampling = fixed-size``. ``secagg_bits``: the
        modulus ``2^bits`` of each coordinate; ``secagg_min_survivors`` (default ``clients_per_round``): each
        client's noise share is sized for this many survivors and a round with fewer is aborted before
        unmasking; ``secagg_shares`` / ``secagg_threshold``: Flower's ``num_shares`` (fraction of the cohort each
        client shares its keys with; 1 = SecAgg) and ``reconstruction_threshold`` (fraction of those shares
        needed to remove a dropped client's masks).
    dp_ftrl, ftrl_restart_rounds:
        DP-FTRL (:mod:`fedmodel.federated.ftrl`): client-level DP by tree aggregation, with no sampling;
        each client takes part at most once per tree, and a tree restarts every ``ftrl_restart_rounds``
        rounds (default ``num_clients // clients_per_round``) or when every available client has taken part.
        Needs ``dp_noise`` (the noise multiplier of every tree node) and ``dp_clip``.
    """

    model: str = "cnn"
    dataset: str = "digits"
    data_path: str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    num_clients: int = 10
    clients_per_round: int = 5
    rounds: int = 10
    partition: PartitionName = "iid"
    alpha: float = 0.5
    shards_per_client: int = 2
    local_epochs: int = 1
    local_batch_size: int = 16
    client_optimizer: ClientOptimizer = "sgd"
    client_lr: float = 0.05
    strategy: StrategyName = "fedavg"
    server_lr: float = 1.0
    proximal_mu: float = 0.0
    trim_beta: float = 0.2
    krum_byzantine: int = 0
    krum_keep: int = 1
    norm_bound: float | None = None
    attack: AttackName = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 10.0
    dp_noise: float | None = None
    dp_clip: float = 1.0
    dp_adaptive: bool = False
    dp_target_quantile: float = 0.5
    dp_clip_lr: float = 0.2
    target_epsilon: float | None = None
    delta: float = 1e-5
    client_sampling: ClientSamplingName = "poisson"
    local_dp_noise: float | None = None
    local_dp_clip: float = 1.0
    fraction_evaluate: float = 0.5
    min_available_clients: int | None = None
    available_timeout: float = 300.0
    reply_timeout: float = 600.0
    min_replies: int = 1
    dp_outputs_only: bool = False
    audit_canaries: int = 0
    seed: int = 0
    max_examples: int | None = None
    seq_len: int = 80
    run_dir: str | None = None
    fail_partitions: str = ""
    secure_aggregation: bool = False
    secagg_bits: int = 20
    secagg_min_survivors: int | None = None
    secagg_shares: float = 1.0
    secagg_threshold: float = 0.5
    dp_ftrl: bool = False
    ftrl_restart_rounds: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "num_clients",
            "clients_per_round",
            "rounds",
            "local_epochs",
            "local_batch_size",
            "seq_len",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{_key(name)} must be an integer >= 1, got {value!r}")
        if self.clients_per_round > self.num_clients:
            raise ConfigError(
                f"clients-per-round must be <= num-clients, got {self.clients_per_round} > {self.num_clients}"
            )
        if not isinstance(self.audit_canaries, int) or isinstance(self.audit_canaries, bool) or self.audit_canaries < 0:
            raise ConfigError(f"audit-canaries must be an integer >= 0, got {self.audit_canaries!r}")
        if self.audit_canaries and self.dp_noise is not None and self.client_sampling == "fixed-size":
            raise ConfigError(
                "audit-canaries needs client-sampling = poisson with client-level DP (canaries join each round "
                "independently, which the fixed-size accounting does not describe); got fixed-size"
            )
        if not isinstance(self.min_replies, int) or isinstance(self.min_replies, bool) or self.min_replies < 0:
            raise ConfigError(f"min-replies must be an integer >= 0, got {self.min_replies!r}")
        if self.min_available_clients is not None and (
            not isinstance(self.min_available_clients, int)
            or isinstance(self.min_available_clients, bool)
            or not 1 <= self.min_available_clients <= self.num_clients
        ):
            raise ConfigError(
                f"min-available-clients must be an integer in [1, num-clients={self.num_clients}], "
                f"got {self.min_available_clients!r}"
            )
        if (
            self.dp_noise is not None
            and self.client_sampling == "fixed-size"
            and self.min_available_clients is not None
            and self.min_available_clients < self.clients_per_round
        ):
            raise ConfigError(
                f"fixed-size client sampling draws exactly clients-per-round={self.clients_per_round} clients, as its "
                f"accountant assumes; min-available-clients must be at least that, got {self.min_available_clients}"
            )
        for name in (
            "client_lr", "server_lr", "dp_clip", "local_dp_clip", "alpha", "delta",
            "available_timeout", "reply_timeout",
        ):  # fmt: skip
            _positive(name, getattr(self, name))
        for name in ("proximal_mu",):
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{_key(name)} must be >= 0, got {getattr(self, name)!r}")
        for name in ("dp_noise", "local_dp_noise"):
            value = getattr(self, name)
            if value is not None and (not _finite(value) or value < 0):
                raise ConfigError(f"{_key(name)} must be >= 0, got {value!r}")
        if self.target_epsilon is not None and (not _finite(self.target_epsilon) or self.target_epsilon <= 0):
            raise ConfigError(f"target-epsilon must be > 0, got {self.target_epsilon!r}")
        if self.target_epsilon is not None and self.dp_noise is None:
            raise ConfigError("target-epsilon needs client-level DP: set dp-noise (e.g. 1.0)")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}")
        if not 0 < self.dp_target_quantile < 1:
            raise ConfigError(f"dp-target-quantile must be in (0, 1), got {self.dp_target_quantile!r}")
        if isinstance(self.krum_keep, bool) or not isinstance(self.krum_keep, int) or self.krum_keep < 1:
            raise ConfigError(f"krum-keep must be an integer >= 1, got {self.krum_keep!r}")
        if self.norm_bound is not None and (not _finite(self.norm_bound) or self.norm_bound <= 0):
            raise ConfigError(f"norm-bound must be a number > 0 or none, got {self.norm_bound!r}")
        if self.norm_bound is not None and self.dp_noise is not None:
            raise ConfigError(
                f"norm-bound clips updates without noise; with client-level DP dp-clip={self.dp_clip} bounds them "
                f"already (got norm-bound={self.norm_bound})"
            )
        AttackConfig(kind=self.attack, fraction=self.attack_fraction, scale=self.attack_scale)
        if not 0 <= self.trim_beta < 0.5:
            raise ConfigError(f"trim-beta must be in [0, 0.5), got {self.trim_beta!r}")
        if not 0 <= self.fraction_evaluate <= 1:
            raise ConfigError(f"fraction-evaluate must be in [0, 1], got {self.fraction_evaluate!r}")
        for name, allowed in (
            ("strategy", STRATEGIES),
            ("partition", get_args(PartitionName)),
            ("client_optimizer", get_args(ClientOptimizer)),
            ("client_sampling", get_args(ClientSamplingName)),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{_key(name)} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.dp_noise is not None and self.strategy not in DP_COMPATIBLE:
            raise ConfigError(
                f"client-level DP replaces the mean of updates; strategy {self.strategy!r} is not a mean "
                f"(use one of {', '.join(DP_COMPATIBLE)})"
            )
        self._check_secure_aggregation()
        self._check_ftrl()
        for name in ("dp_adaptive", "dp_outputs_only", "secure_aggregation", "dp_ftrl"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{_key(name)} must be true or false, got {getattr(self, name)!r}")
        try:
            self.failing_partitions  # noqa: B018 - parse it now, not in a client
        except ValueError:
            raise ConfigError(
                f'fail-partitions must be comma-separated partition ids like "0,3", got {self.fail_partitions!r}'
            ) from None
        object.__setattr__(self, "hparams", dict(self.hparams))

    def _check_secure_aggregation(self) -> None:
        if self.secure_aggregation is not True:
            return
        problems = []
        if self.dp_noise is None:
            problems.append("it needs dp-noise (client-level DP; 0 = masking only) and dp-clip")
        if self.client_sampling != "fixed-size":
            problems.append(
                "it needs client-sampling = fixed-size (an abort for too few survivors must not depend on "
                "whether one client was sampled, which Poisson sampling cannot promise)"
            )
        if self.dp_adaptive:
            problems.append("dp-adaptive needs a second secure sum (the clipped count), not built")
        if self.audit_canaries:
            problems.append("audit-canaries are added by the server, which sees only the masked sum")
        if self.strategy not in DP_COMPATIBLE:
            problems.append(f"strategy {self.strategy!r} needs individual updates, which the server never sees")
        if problems:
            raise ConfigError("secure-aggregation: " + "; ".join(problems))
        bits = self.secagg_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 30:
            raise ConfigError(f"secagg-bits must be an integer in [8, 30], got {self.secagg_bits!r}")
        survivors = self.secagg_survivors
        if (
            isinstance(survivors, bool)
            or not isinstance(survivors, int)
            or not 2 <= survivors <= self.clients_per_round
        ):
            raise ConfigError(
                f"secagg-min-survivors must be an integer in [2, clients-per-round={self.clients_per_round}], "
                f"got {survivors!r}"
            )
        if not _finite(self.secagg_shares) or not 0 < self.secagg_shares <= 1:
            raise ConfigError(f"secagg-shares must be a fraction in (0, 1], got {self.secagg_shares!r}")
        if not _finite(self.secagg_threshold) or not 0 < self.secagg_threshold <= 1:
            raise ConfigError(f"secagg-threshold must be a fraction in (0, 1], got {self.secagg_threshold!r}")

    def _check_ftrl(self) -> None:
        restart = self.ftrl_restart_rounds
        if restart is not None and (isinstance(restart, bool) or not isinstance(restart, int) or restart < 1):
            raise ConfigError(f"ftrl-restart-rounds must be an integer >= 1 or none, got {restart!r}")
        if self.dp_ftrl is not True:
            return
        problems = []
        if self.dp_noise is None:
            problems.append("it needs dp-noise (the noise multiplier of each tree node)")
        if self.client_sampling != "poisson":
            problems.append("it samples no clients (client-sampling does not apply; leave it at its default)")
        if self.secure_aggregation:
            problems.append("secure aggregation with tree noise is not built")
        if self.dp_adaptive:
            problems.append("dp-adaptive is not built for trees")
        if self.audit_canaries:
            problems.append("audit-canaries assume Poisson participation")
        if problems:
            raise ConfigError("dp-ftrl: " + "; ".join(problems))

    @property
    def ftrl_rounds_per_tree(self) -> int:
        """Rounds per DP-FTRL tree: ``ftrl_restart_rounds`` or one pass over the population."""
        if self.ftrl_restart_rounds is not None:
            return self.ftrl_restart_rounds
        return max(1, self.num_clients // self.clients_per_round)

    @property
    def secagg_survivors(self) -> int:
        """The minimum survivors of a secure round (``secagg_min_survivors`` or ``clients_per_round``)."""
        return self.secagg_min_survivors if self.secagg_min_survivors is not None else self.clients_per_round

    @property
    def attack_config(self) -> AttackConfig:
        """The simulated attack (``kind == "none"``: every client is honest)."""
        return AttackConfig(kind=self.attack, fraction=self.attack_fraction, scale=self.attack_scale)

    @property
    def sampling_rate(self) -> float:
        """Client-level ``q = clients_per_round / num_clients``."""
        return self.clients_per_round / self.num_clients

    @property
    def quorum(self) -> int:
        """Connected nodes a round needs before it starts (``min_available_clients`` or ``clients_per_round``)."""
        return self.min_available_clients if self.min_available_clients is not None else self.clients_per_round

    @property
    def failing_partitions(self) -> frozenset[int]:
        """Fault injection for tests and drills: partitions whose client raises (``fail-partitions = "0,3"``)."""
        return frozenset(int(p) for p in str(self.fail_partitions).split(",") if p.strip())

    @property
    def federated_evaluation(self) -> bool:
        """Whether clients evaluate the global model on their own data (a diagnostic, not DP-covered)."""
        return self.fraction_evaluate > 0 and not self.dp_outputs_only

    def without_local_dp(self) -> FederatedConfig:
        """The same experiment without client-side DP-SGD (for evaluation models)."""
        return dataclasses.replace(self, local_dp_noise=None) if self.local_dp_noise is not None else self

    @property
    def client_dp(self) -> bool:
        return self.dp_noise is not None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FederatedConfig:
        """Build from kebab- or snake-case keys (Flower run config, TOML, ``--set``); unknown keys fail."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        hparams: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key.startswith("hparam_") or key.startswith("hparam."):
                name = key.split("_", 1)[1] if key.startswith("hparam_") else key.split(".", 1)[1]
                hparams[name] = _literal(value)
                continue
            if key not in fields:
                known = [*sorted(_key(k) for k in fields if k != "hparams"), "hparam-NAME"]
                raise ConfigError(f"unknown setting {raw_key!r}; expected one of {', '.join(known)}")
            kwargs[key] = _coerce(fields[key], value)
        if hparams:
            kwargs["hparams"] = {**dict(kwargs.get("hparams", {})), **hparams}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["hparams"] = dict(self.hparams)
        return out

    def to_run_config(self) -> dict[str, Any]:
        """Flat kebab-case scalars for Flower's run config (None values dropped, hparams flattened)."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key == "hparams":
                for h, v in value.items():
                    out[f"hparam-{h}"] = repr(list(v)) if isinstance(v, tuple | list) else v
            elif value is not None:
                out[_key(key)] = value
        return out


_NONE = ("", "none", "None")
#: Float settings that TOML or a run config may write as an integer (``reply-timeout = 60``).
FLOATS = ("dp_noise", "local_dp_noise", "target_epsilon", "available_timeout", "reply_timeout", "client_lr",
          "server_lr", "dp_clip", "local_dp_clip", "alpha", "delta", "proximal_mu", "fraction_evaluate",
          "norm_bound", "attack_fraction", "attack_scale", "secagg_shares", "secagg_threshold")  # fmt: skip


def _coerce(field: dataclasses.Field[Any], value: Any) -> Any:
    """Flower run configs carry str/int/float/bool: turn ``"none"``/``""`` into None for optional fields."""
    if isinstance(value, str) and value in _NONE and "None" in str(field.type):
        return None
    if str(field.type) == "bool" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if field.name == "fail_partitions" and isinstance(value, int | tuple | list) and not isinstance(value, bool):
        return ",".join(str(v) for v in (value if isinstance(value, tuple | list) else [value]))  # --set k=0,3
    if field.name in FLOATS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _literal(value: Any) -> Any:
    """Flower run configs hold only scalars: ``"[64, 32]"`` stands for a list."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _key(name: str) -> str:
    return name.replace("_", "-")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: object) -> None:
    if not _finite(value) or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{_key(name)} must be a number > 0, got {value!r}")
