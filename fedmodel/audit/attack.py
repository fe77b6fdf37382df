"""Membership inference against a finished run's model: the loss attack and offline LiRA.

Steps of :func:`membership_audit`:

1. Rebuild the run's data from ``run.json`` (the seed fixes splits and partitions) and load its model.
   Members are the examples it trained on (central: the training split; federated: every client's
   training part); non-members are the test set, held out from training.
2. Draw ``targets`` members and ``targets`` non-members (fresh OS entropy).
3. Loss attack (Yeom et al. 2018): score = minus the target's loss.
4. Offline LiRA (Carlini et al. 2022): ``shadows`` models trained by fedmodel with the run's own
   configuration on random halves of the population *without any target*; each target's logit-scaled
   confidence is compared with its Gaussian fit over the shadows (fixed variance).
5. ROC, AUC, TPR at 0.1% and 1% FPR for both; ``audit_roc.png`` on log axes.

tensorflow-privacy 0.9.0 as published on PyPI does not include its ``privacy_tests`` package (the
wheel ships only the deprecated stubs that import it), so the attacks are fedmodel's own
(:mod:`.membership`), checked against TensorFlow's losses and synthetic populations in the tests.

These attacks measure leakage on real examples; they are not converted into an epsilon lower bound,
because which examples trained was not decided by a secret coin per example (the split is seeded and
public). The lower bound comes from canaries (:mod:`.onerun`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedmodel.audit import membership, onerun
from fedmodel.errors import ConfigError
from fedmodel.privacy import randomness

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class AuditTarget:
    """A finished run as the attacker sees it: its data split and a way to get its logits.

    ``weights`` is the final model's weights (federated runs: for scoring client canaries).
    """

    kind: str
    members: tuple[np.ndarray, np.ndarray]
    nonmembers: tuple[np.ndarray, np.ndarray]
    predict: Predict
    train_shadow: Callable[[tuple[np.ndarray, ...], Path], Predict]
    weights: list[np.ndarray] | None = None


def load_target(run_dir: Path) -> AuditTarget:
    """The run in ``run_dir`` (central or federated), ready to attack."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a finished fedmodel run (no run.json)")
    record = json.loads(path.read_text())
    if record.get("kind") == "central":
        return _central(Path(run_dir), record)
    if record.get("kind") == "federated":
        return _federated(Path(run_dir), record)
    raise ConfigError(f"{path} has kind {record.get('kind')!r}; expected central or federated")


def _write_npz(path: Path, data: tuple[np.ndarray, ...]) -> Path:
    x_train, y_train, x_test, y_test = data
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _central(run_dir: Path, record: dict[str, Any]) -> AuditTarget:
    from fedmodel.central.config import TrainConfig
    from fedmodel.central.plan import plan_for, split_validation

    config = TrainConfig.from_dict(record["config"])
    model_file = run_dir / "model.keras"
    if not model_file.is_file():
        raise ConfigError(f"{run_dir} has no model.keras (trained with --audit-discard-model?); nothing to attack")
    data = plan_for(config).dataset
    train_idx, _ = split_validation(len(data.x_train), config.validation_fraction, config.seed)
    model = _load_keras(model_file)

    def shadow(split: tuple[np.ndarray, ...], workdir: Path) -> Predict:
        from fedmodel.central.trainer import train

        file = _write_npz(workdir / "shadow.npz", split)
        shadow_config = dataclasses.replace(
            config, dataset=str(file), data_path=None, audit_canaries=0, audit_keep_model=True,
            tensorboard=False, checkpoints=False,
        )  # fmt: skip
        train(shadow_config, run_dir=workdir / "run")
        return _predictor(_load_keras(workdir / "run" / "model.keras"))

    return AuditTarget(
        kind="central",
        members=(data.x_train[train_idx], data.y_train[train_idx]),
        nonmembers=(data.x_test, data.y_test),
        predict=_predictor(model),
        train_shadow=shadow,
    )


def _load_keras(path: Path) -> Any:
    import tensorflow as tf

    import fedmodel.zoo  # noqa: F401  (registers the zoo's layers for loading)

    return tf.keras.models.load_model(path, compile=False)


def _predictor(model: Any) -> Predict:
    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(model(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)])

    return predict


def _federated(run_dir: Path, record: dict[str, Any]) -> AuditTarget:
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.local import TrainerKey, trainer_for
    from fedmodel.federated.shards import client_split, dataset_for

    if (record.get("outputs") or {}).get("client_data") == "node-local":
        raise ConfigError(
            "this run's clients trained on their own node-local files, which the server does not have; "
            "membership inference needs the members"
        )
    config = FederatedConfig.from_mapping(record["config"])
    data = dataset_for(config)
    member_idx = np.unique(np.concatenate([client_split(config, i)[0] for i in range(config.num_clients)]))
    weights_file = run_dir / "weights.npz"
    if not weights_file.is_file():
        raise ConfigError(f"{run_dir} has no weights.npz (the run did not finish)")

    def evaluator_for(cfg: FederatedConfig, info: Any) -> Any:
        key = TrainerKey.of(
            cfg.without_local_dp(), input_shape=info.input_shape, num_classes=info.num_classes, proximal_mu=0.0
        )
        return trainer_for(key)

    def load_weights(path: Path) -> list[np.ndarray]:
        with np.load(path, allow_pickle=False) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    evaluator = evaluator_for(config, data.info)
    weights = load_weights(weights_file)

    def shadow(split: tuple[np.ndarray, ...], workdir: Path) -> Predict:
        from fedmodel.federated.simulate import run_simulation

        file = _write_npz(workdir / "shadow.npz", split)
        values = {**config.to_dict(), "dataset": str(file), "data_path": None, "audit_canaries": 0}
        values["run_dir"] = str(workdir / "run")
        shadow_config = FederatedConfig.from_mapping(values)
        run_simulation(shadow_config)
        shadow_weights = load_weights(workdir / "run" / "weights.npz")
        return lambda x: evaluator.logits(shadow_weights, x)

    return AuditTarget(
        kind="federated",
        members=(data.x_train[member_idx], data.y_train[member_idx]),
        nonmembers=(data.x_test, data.y_test),
        predict=lambda x: evaluator.logits(weights, x),
        train_shadow=shadow,
        weights=weights,
    )


def rescore_canaries(run_dir: Path, target: AuditTarget | None = None) -> dict[str, Any] | None:
    """The one-run section again, from the canaries saved in ``run_dir/audit`` and the final model.

    ``None`` when the run was trained without canaries.
    """
    from fedmodel.audit.canaries import SECRET_DIR, ExampleCanaries
    from fedmodel.audit.record import LOSS_SCORE, NON_PRIVATE_DELTA, one_run_record
    from fedmodel.audit.report import claimed_epsilon

    folder = Path(run_dir) / SECRET_DIR
    record = json.loads((Path(run_dir) / "run.json").read_text())
    claimed, delta, accountant = claimed_epsilon(record)
    delta = delta if isinstance(delta, float) and claimed is not None else NON_PRIVATE_DELTA
    if (folder / "example_canaries.npz").exists():
        target = target or load_target(run_dir)
        canaries = ExampleCanaries.load(run_dir)
        scores = membership.loss_scores(target.predict(canaries.x), canaries.y)
        audit, unit, score = onerun.audit_scores(scores, canaries.included, delta=delta), "example", LOSS_SCORE
    elif (folder / "client_canaries.json").exists():
        from fedmodel.audit.federated import SCORE as CLIENT_SCORE  # imports Flower: only for federated runs
        from fedmodel.audit.federated import CanaryClients

        target = target or load_target(run_dir)
        assert target.weights is not None  # federated targets carry their weights
        clients = CanaryClients.load(run_dir)
        audit, unit, score = clients.audit(target.weights, delta_=delta), "client", CLIENT_SCORE
    else:
        return None
    return one_run_record(audit, unit=unit, claimed_epsilon=claimed, accountant=accountant, score=score)


def membership_audit(
    run_dir: Path,
    *,
    targets: int = 500,
    shadows: int = 4,
    log: Callable[[str], None] = print,
    rng: np.random.Generator | None = None,
    target: AuditTarget | None = None,
) -> dict[str, Any]:
    """Run the attacks on ``run_dir``; returns the ``membership`` section of ``audit.json`` (and plots)."""
    if targets < 1 or shadows < 0:
        raise ConfigError(f"need targets >= 1 and shadows >= 0, got targets={targets}, shadows={shadows}")
    target = target or load_target(run_dir)
    rng = rng if rng is not None else randomness.numpy_rng()
    (xm, ym), (xn, yn) = target.members, target.nonmembers
    n = min(targets, len(xm), len(xn))
    mi, ni = rng.choice(len(xm), n, replace=False), rng.choice(len(xn), n, replace=False)
    tx, ty = np.concatenate([xm[mi], xn[ni]]), np.concatenate([ym[mi], yn[ni]])
    is_member = np.arange(2 * n) < n
    log(f"membership inference on {n} members and {n} non-members of the {target.kind} run")
    logits = target.predict(tx)
    loss = membership.roc(*_split(membership.loss_scores(logits, ty), is_member))
    curves = {"loss attack": loss}
    out: dict[str, Any] = {
        "targets_per_side": n,
        "members": "training examples of the run" if target.kind == "central" else "the clients' training examples",
        "nonmembers": "the test set, held out from training",
        "loss": {**loss.to_dict(), "advantage": membership.advantage(loss)},
    }
    if shadows:
        phi = _shadow_confidences(target, tx, ty, mi, ni, shadows=shadows, rng=rng, log=log)
        scores = membership.lira_offline_scores(membership.lira_confidence(logits, ty), phi)
        lira = membership.roc(*_split(scores, is_member))
        curves["LiRA (offline)"] = lira
        out["lira"] = {**lira.to_dict(), "advantage": membership.advantage(lira), "shadows": shadows}
        out["shadow_training"] = (
            "the run's own configuration (same model, optimizer, epochs, privacy settings) on a random half of "
            "the members and non-members that are not targets"
        )
    membership.plot_roc(Path(run_dir) / "audit_roc.png", curves, title=f"Membership inference ({target.kind} run)")
    out["roc_plot"] = "audit_roc.png"
    return out


def _split(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return scores[is_member], scores[~is_member]


def _shadow_confidences(
    target: AuditTarget,
    tx: np.ndarray,
    ty: np.ndarray,
    mi: np.ndarray,
    ni: np.ndarray,
    *,
    shadows: int,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> np.ndarray:
    """(shadows, targets) LiRA confidences of shadow models trained without any target."""
    (xm, ym), (xn, yn) = target.members, target.nonmembers
    keep_m = np.setdiff1d(np.arange(len(xm)), mi)
    keep_n = np.setdiff1d(np.arange(len(xn)), ni)
    px, py = np.concatenate([xm[keep_m], xn[keep_n]]), np.concatenate([ym[keep_m], yn[keep_n]])
    phi = []
    for k in range(shadows):
        order = rng.permutation(len(px))
        half, rest = order[: len(px) // 2], order[len(px) // 2 :]
        log(f"shadow model {k + 1}/{shadows}: training on {len(half)} non-target examples")
        with tempfile.TemporaryDirectory(prefix="fedmodel-shadow-") as tmp:
            predict = target.train_shadow((px[half], py[half], px[rest], py[rest]), Path(tmp))
            phi.append(membership.lira_confidence(predict(tx), ty))
    return np.stack(phi)
