"""Central (single-process or `tf.distribute`) training of a zoo model on a dataset.

The steps of :func:`train`:

1. Validate the request (model, data, shapes, hyperparameters) without TensorFlow: see :mod:`.plan`.
2. Set the seed, the strategy and the dtype policy; build and compile the model in the strategy's scope.
   The seed decides the initial weights, the validation split and the order of non-private training;
   DP noise and DP batches come from OS entropy (:mod:`fedmodel.privacy.randomness`), so two DP runs with
   the same seed differ.
3. Hold out a seeded validation split; fit with progress, checkpoints, TensorBoard and early stopping.
4. Evaluate on the test set (loss, accuracy, macro-F1, AUC) and save the model and ``run.json``.

All outputs go to a staged run directory that appears only when the run finishes; after every epoch it
holds a resume point, so an interrupted run can go on (:func:`resume_training`, :mod:`.resume`).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from fedmodel import zoo
from fedmodel.audit import onerun
from fedmodel.audit.canaries import ExampleCanaries
from fedmodel.audit.membership import loss_scores
from fedmodel.audit.record import (
    LOSS_SCORE,
    NON_PRIVATE_DELTA,
    example_canaries_for,
    one_run_record,
    tightest_claim,
    update_audit_file,
)
from fedmodel.central import checkpointing, optim, private, resume
from fedmodel.central.config import TrainConfig
from fedmodel.central.plan import Plan, plan_for, split_validation
from fedmodel.central.progress import progress_callback
from fedmodel.central.strategy import apply_precision, float32_outputs, make_strategy, resolve_precision
from fedmodel.errors import ConfigError
from fedmodel.metrics import classification_metrics
from fedmodel.privacy.accounting import ACCOUNTANTS
from fedmodel.privacy.engine.dpsgd import DPSGDModel
from fedmodel.rundir import check_new_run_dir, staged_run_dir, versions, write_json


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    epochs_run: int
    seconds: float
    num_replicas: int
    precision: str
    privacy: dict[str, Any] | None = None
    sessions: int = 1
    audit: dict[str, Any] | None = None


def make_dataset(x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, shuffle: bool) -> tf.data.Dataset:
    """A batched ``tf.data`` pipeline; shuffling is seeded and reshuffles every epoch."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build_model(config: TrainConfig, plan: Plan) -> tf.keras.Model:
    """The zoo model with float32 outputs and weight regularization (call inside the strategy scope)."""
    info = plan.dataset.info
    model = zoo.build_model(
        config.model,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        seed=config.seed,
        **dict(config.hparams),
    )
    model = float32_outputs(model)
    optim.add_weight_regularization(model, l1=config.l1, l2=config.l2)
    return model


def build_compiled_model(
    config: TrainConfig, plan: Plan, *, strategy: tf.distribute.Strategy, steps_per_epoch: int
) -> tf.keras.Model:
    """Build and compile in ``strategy``'s scope; with DP-SGD the result wraps the zoo model."""
    with strategy.scope():
        model = build_model(config, plan)
        optimizer = optim.make_optimizer(config, steps_per_epoch=steps_per_epoch)
        if plan.privacy is not None:
            return private.compile_private(model, config, plan.privacy, optimizer=optimizer)
        model.compile(
            optimizer=optimizer,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return model


def inner_model(model: tf.keras.Model) -> tf.keras.Model:
    """The zoo model itself (unwrapping DP-SGD's train-step wrapper)."""
    return model.model if isinstance(model, DPSGDModel) else model


def _callbacks(
    config: TrainConfig,
    out: Path,
    *,
    has_validation: bool,
    steps: int,
    history: dict[str, list[float]],
    private: bool,
) -> list[tf.keras.callbacks.Callback]:
    """Progress, checkpoints, TensorBoard, early stopping; see :func:`selects_checkpoint` for DP runs."""
    monitor = "val_loss" if has_validation else "loss"
    keys = COVERED_HISTORY if config.dp_outputs_only else None
    callbacks = [progress_callback(epochs=config.epochs, steps_per_epoch=steps, keys=keys)]
    select = selects_checkpoint(config, has_validation=has_validation, private=private)
    if select:
        (out / "checkpoints").mkdir(exist_ok=True)
        callbacks.append(
            tf.keras.callbacks.ModelCheckpoint(
                str(out / "checkpoints" / "best.weights.h5"),
                monitor=monitor,
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=min(history[monitor]) if history.get(monitor) else None,
            )
        )
    if config.tensorboard and not config.dp_outputs_only:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), profile_batch=0))
    if config.early_stopping:
        callbacks.append(
            checkpointing.ResumedEarlyStopping(
                previous=history.get(monitor, []),
                best_weights=out / "checkpoints" / "best.weights.h5" if select else None,
                monitor=monitor,
                patience=config.early_stopping,
                restore_best_weights=True,
            )
        )
    return callbacks


def selects_checkpoint(config: TrainConfig, *, has_validation: bool, private: bool) -> bool:
    """Whether ``checkpoints/best.weights.h5`` is kept (the epoch with the lowest monitored loss).

    A DP run never picks a checkpoint by its un-noised *training* loss (a data-dependent release no ledger
    counts): without a validation split it keeps only the final model; with ``dp_outputs_only`` it picks
    nothing at all.
    """
    if not config.checkpoints or config.dp_outputs_only:
        return False
    return has_validation or not private


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def output_dir(strategy: tf.distribute.Strategy, run_dir: str | Path) -> Path:
    """Where this process writes: the run directory on the chief, a throw-away directory on other workers.

    Every worker must save (Keras collectives need all of them), but only the chief's copy is kept.
    """
    if is_chief(strategy):
        return Path(run_dir)
    resolver = strategy.cluster_resolver
    return Path(tempfile.mkdtemp(prefix=f"fedmodel-worker{resolver.task_id}-")) / "run"


def predict_logits(model: tf.keras.Model, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Model logits for ``x`` in float32 numpy."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def check_staging(run_dir: str | Path) -> Path:
    """The staging directory of a new run at ``run_dir``, which must not be in use."""
    staging = resume.partial_dir(run_dir)
    if resume.has_point(staging):
        raise ConfigError(
            f"an interrupted run is staged at {staging}; continue it with `fedmodel train --resume {run_dir}` "
            "or delete that directory"
        )
    if staging.exists():
        raise ConfigError(
            f"staging directory {staging} exists (another run writing to {run_dir}, or one that was killed before "
            "its first epoch ended); delete it or pass another --run-dir"
        )
    return staging


def resume_training(run_dir: str | Path) -> TrainResult:
    """Continue the interrupted run ``run_dir`` from its latest resume point, with its saved config."""
    point = resume.load(run_dir)
    return train(point.config, run_dir=run_dir, resume_from=point)


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path,
    plan: Plan | None = None,
    resume_from: resume.ResumePoint | None = None,
) -> TrainResult:
    """Train ``config`` and write its run directory; see the module docstring for the steps.

    With ``resume_from`` (see :mod:`.resume`), training continues after that point's last epoch, from its
    weights, optimizer state and privacy ledger.
    """
    plan = plan or plan_for(config)  # 1. validated before anything is written
    check_new_run_dir(run_dir)
    resumable = config.checkpoints and config.strategy != "multi-worker"
    if resume_from is not None and not resumable:
        raise ConfigError("resuming needs checkpoints and a single-process strategy")
    staging: Path | None = None  # multi-worker: every worker stages its own copy (they may share a filesystem)
    if config.strategy != "multi-worker":
        staging = resume.partial_dir(run_dir) if resume_from is not None else check_staging(run_dir)
    data = plan.dataset
    start = time.perf_counter()

    # 2. Seed, strategy, precision, model.
    strategy = make_strategy(config.strategy, logical_devices=config.logical_devices)
    target = output_dir(strategy, run_dir)
    policy = resolve_precision(config.precision)
    apply_precision(policy)
    try:
        with staged_run_dir(target, staging=staging, keep_if=resume.has_point if resumable else None) as out:
            session = resume.start_session(out)
            seed = resume.session_seed(config.seed, session)  # non-private randomness only (see .resume)
            tf.keras.utils.set_random_seed(seed)
            train_idx, val_idx = split_validation(len(data.x_train), config.validation_fraction, config.seed)
            x_train, y_train = data.x_train[train_idx], data.y_train[train_idx]
            canaries = None
            if config.audit_canaries:  # secret coins from OS entropy; kept in out/audit/ across a resume
                canaries = example_canaries_for(
                    out, config.audit_canaries, x_train=x_train, y_train=y_train, num_classes=data.info.num_classes
                )
                cx, cy = canaries.trained()
                x_train, y_train = np.concatenate([x_train, cx]), np.concatenate([y_train, cy])
            if plan.privacy is None:
                steps = optim.steps_per_epoch(len(train_idx), config.batch_size)
                train_ds = make_dataset(x_train, y_train, batch_size=config.batch_size, seed=seed, shuffle=True)
                ledger_cb = None
            else:
                steps = private.steps_per_epoch(plan.privacy)
                train_ds = private.dp_dataset(x_train, y_train, plan.privacy)  # OS entropy, not the seed
                ledger = (
                    resume_from.ledger()
                    if resume_from is not None
                    else private.new_ledger(plan.privacy, steps_per_epoch=steps)
                )
                ledger_cb = private.LedgerCallback(ledger, plan.privacy)
            model = build_compiled_model(config, plan, strategy=strategy, steps_per_epoch=steps)
            net = inner_model(model)
            if resume_from is not None:
                with strategy.scope():
                    checkpointing.restore(resume_from, net, model.optimizer)
            if session > 1 and plan.privacy is None:  # the zoo builder seeded TensorFlow with config.seed
                tf.keras.utils.set_random_seed(seed)  # (never in a DP run: the tfp engine's noise follows it)
            if ledger_cb is not None:
                note = f"engine {engine_name(model)}, sampling {ledger_cb.plan.privacy.sampling}"
                if note not in ledger_cb.ledger.notes:
                    ledger_cb.ledger.notes.append(note)
            previous = resume_from.history if resume_from is not None else {}
            initial_epoch = resume_from.epochs_done if resume_from is not None else 0

            # 3. Fit.
            val_ds = (
                make_dataset(
                    data.x_train[val_idx],
                    data.y_train[val_idx],
                    batch_size=config.batch_size,
                    seed=0,
                    shuffle=False,
                )
                if len(val_idx) and not config.dp_outputs_only
                else None
            )
            callbacks = _callbacks(
                config,
                out,
                has_validation=val_ds is not None,
                steps=steps,
                history=previous,
                private=plan.privacy is not None,
            )
            if ledger_cb is not None:
                callbacks.insert(0, ledger_cb)  # first, so epsilon is in the logs the others see
            checkpointer = None
            if resumable:
                checkpointer = checkpointing.EpochCheckpointer(
                    out,
                    config,
                    net=net,
                    optimizer=model.optimizer,
                    ledger=ledger_cb.ledger if ledger_cb is not None else None,
                    history=previous,
                    keys=COVERED_HISTORY if config.dp_outputs_only else None,
                )
                callbacks.insert(1 if ledger_cb is not None else 0, checkpointer)
            history = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps if ledger_cb is not None else None,
                verbose=0,
                callbacks=callbacks,
            )

            # 4. Evaluate and record.
            logits = predict_logits(net, data.x_test, batch_size=max(config.batch_size, 256))
            metrics = classification_metrics(logits, data.y_test, task=data.info.task)
            if canaries is None or config.audit_keep_model:
                net.save(out / "model.keras")
            seconds = time.perf_counter() - start
            if checkpointer is not None:
                hist = checkpointer.history
            else:
                hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
            result = TrainResult(
                run_dir=Path(run_dir),
                metrics=metrics,
                history=hist,
                epochs_run=len(next(iter(hist.values()), [])),
                seconds=seconds,
                num_replicas=strategy.num_replicas_in_sync,
                precision=policy,
                privacy=None if ledger_cb is None else privacy_summary(ledger_cb, model),
                sessions=session,
            )
            if ledger_cb is not None:
                ledger_cb.ledger.save(out)
            if canaries is not None:
                result = dataclasses.replace(result, audit=audit_canaries(config, net, canaries, result, out))
            write_json(out / "run.json", run_record(config, plan, result))
            if plan.privacy is not None and not config.dp_outputs_only:
                write_json(out / DIAGNOSTICS, diagnostics_record(result))
            resume.finish(out)
    finally:
        apply_precision("float32")
        if target != Path(run_dir):
            shutil.rmtree(target.parent, ignore_errors=True)
    return result


def audit_canaries(
    config: TrainConfig, net: tf.keras.Model, canaries: ExampleCanaries, result: TrainResult, out: Path
) -> dict[str, Any]:
    """Score the canaries on the final model, write ``audit.json``, and return its one-run section."""
    logits = predict_logits(net, canaries.x, batch_size=max(config.batch_size, 256))
    scores = loss_scores(logits, canaries.y)
    privacy = config.privacy
    claimed, accountant, delta = None, None, NON_PRIVATE_DELTA
    if privacy is not None and result.privacy is not None:
        delta = privacy.delta
        claimed, accountant = tightest_claim(result.privacy["epsilon"])
    audit = onerun.audit_scores(scores, canaries.included, delta=delta)
    record = one_run_record(audit, unit="example", claimed_epsilon=claimed, accountant=accountant, score=LOSS_SCORE)
    update_audit_file(out, "one_run", record)
    if not config.audit_keep_model:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record


#: Per-epoch values of a DP run that the ledger covers (epsilon is computed from the ledger alone).
COVERED_HISTORY: tuple[str, ...] = ("epsilon",)
DIAGNOSTICS = "diagnostics.json"
DIAGNOSTIC_NOTE = (
    "Computed on private examples (training batches, the validation split) WITHOUT noise: not covered by the "
    "privacy ledger or its epsilon. Do not publish these beside a DP model; --dp-outputs-only does not produce them."
)


def covered_history(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """The per-epoch values the ledger covers."""
    return {k: v for k, v in history.items() if k in COVERED_HISTORY}


def diagnostics_record(result: TrainResult) -> dict[str, Any]:
    """``diagnostics.json`` of a DP run: per-epoch training/validation metrics, labelled as not covered."""
    return {
        "covered_by_privacy_ledger": False,
        "note": DIAGNOSTIC_NOTE,
        "history": {k: v for k, v in result.history.items() if k not in COVERED_HISTORY},
    }


def outputs_record(config: TrainConfig, plan: Plan, *, private: bool) -> dict[str, Any]:
    """Which outputs of the run directory epsilon covers (see docs/privacy.md)."""
    if not private:
        return {"dp_outputs_only": False, "covered_by_epsilon": [], "not_covered": ["everything: no DP"]}
    has_validation = config.validation_fraction > 0 and not config.dp_outputs_only
    covered = [
        "model.keras (the final weights)",
        "privacy_ledger.json",
        "run.json history.epsilon and privacy",
        "run.json metrics (the test split, held out from training and treated as public)",
    ]
    not_covered = []
    if not config.dp_outputs_only:
        not_covered.append(f"{DIAGNOSTICS}: {DIAGNOSTIC_NOTE}")
        if config.tensorboard:
            not_covered.append("tensorboard/: un-noised training (and validation) loss and accuracy")
    if selects_checkpoint(config, has_validation=has_validation, private=True):
        not_covered.append(
            "checkpoints/best.weights.h5: the epoch with the lowest un-noised validation loss (a choice made on "
            "validation examples, which the ledger does not cover)"
        )
    if config.audit_canaries:
        covered.append("audit.json (the final model's scores on the canaries, which are not real examples)")
    scanned = list(plan.dataset.info.read_from_data)
    not_covered += [f"dataset {name}: read from the data itself (no public metadata declared it)" for name in scanned]
    return {"dp_outputs_only": config.dp_outputs_only, "covered_by_epsilon": covered, "not_covered": not_covered}


def engine_name(model: tf.keras.Model) -> str:
    """``fast`` or ``vectorized`` (fedmodel's DP-SGD), or ``tfp`` (tensorflow-privacy's optimizer)."""
    return model.engine if isinstance(model, DPSGDModel) else "tfp"


def noise_source(model: tf.keras.Model) -> str:
    """Where the run's DP noise came from (see :mod:`fedmodel.privacy.randomness`)."""
    if not isinstance(model, DPSGDModel):
        return "tensorflow-privacy: TensorFlow's global generator, re-seeded from OS entropy"
    return "OS entropy (Philox)" if model.secure_noise else "an injected generator (not secure)"


def privacy_summary(callback: private.LedgerCallback, model: tf.keras.Model) -> dict[str, Any]:
    """What the run spent, computed from its ledger (never from the config)."""
    plan, ledger = callback.plan, callback.ledger
    delta = plan.privacy.delta
    spent = ledger.steps > 0 and callback.noise_multiplier > 0
    return {
        "unit": "example",
        "epsilon": {
            name: _epsilon_or_reason(ledger, delta, name) if spent else (0.0 if not ledger.steps else float("inf"))
            for name in ACCOUNTANTS
        },
        "delta": delta,
        "noise_multiplier": callback.noise_multiplier,
        "noise_source": noise_source(model),
        "calibrated": plan.calibrated,
        "target_epsilon": plan.privacy.target_epsilon,
        "l2_norm_clip": plan.privacy.l2_norm_clip,
        "sampling": plan.privacy.sampling,
        "sampling_rate": plan.sampling_rate,
        "examples": plan.examples,
        "steps": ledger.steps,
        "planned_steps": plan.planned_steps,
        "stopped_by_budget": callback.stopped_by_budget,
        "engine": engine_name(model),
        "warnings": list(plan.warnings),
    }


def _epsilon_or_reason(ledger: Any, delta: float, name: Any) -> float | str:
    from fedmodel.privacy.accounting import AccountingError

    try:
        return float(ledger.epsilon(delta, name))
    except AccountingError as err:
        return f"n/a: {err}"


def run_record(config: TrainConfig, plan: Plan, result: TrainResult) -> dict[str, Any]:
    """The ``run.json`` document: what ran, on what, with which versions, and what it scored."""
    info = plan.dataset.info
    return {
        "kind": "central",
        "config": config.to_dict(),
        "model": {"name": config.model, "task": plan.spec.task, "params": plan.num_params},
        "dataset": {
            "name": info.name,
            "source": info.source,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "train_examples": len(plan.dataset.x_train),
            "test_examples": len(plan.dataset.x_test),
        },
        "strategy": {"name": config.strategy, "replicas": result.num_replicas},
        "precision": result.precision,
        "epochs_run": result.epochs_run,
        "sessions": result.sessions,
        "seconds": round(result.seconds, 3),
        "metrics": result.metrics,
        "privacy": result.privacy,
        "history": covered_history(result.history) if result.privacy is not None else result.history,
        "outputs": outputs_record(config, plan, private=result.privacy is not None),
        "audit": result.audit,
        "versions": versions(),
    }
