"""Central DP-SGD runs: the ledger holds exactly the steps run, budgets stop on time, epsilon matches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.central.config import TrainConfig
from fedmodel.central.plan import plan_for
from fedmodel.central.trainer import train
from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import dp_event, epsilon
from fedmodel.privacy.config import PrivacyConfig
from fedmodel.privacy.ledger import PrivacyLedger

FAST = {"tensorboard": False, "checkpoints": False, "validation_fraction": 0.0}


def test_ledger_has_every_step_and_epsilon_matches_the_budget_plan(tmp_path: Path) -> None:
    privacy = PrivacyConfig(noise_multiplier=1.0, delta=1e-4)
    config = TrainConfig(model="logreg", dataset="synthetic", epochs=2, batch_size=100, privacy=privacy, **FAST)
    result = train(config, run_dir=tmp_path / "run")
    examples = 800
    steps = math.ceil(2 * examples / 100)
    ledger = PrivacyLedger.load(tmp_path / "run")
    assert ledger.steps == steps == result.privacy["steps"]  # type: ignore[index]
    assert ledger.unit == "example" and ledger.sampling == "poisson"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    want = epsilon(
        dp_event(noise_multiplier=1.0, sampling_rate=100 / examples, steps=steps),
        delta=1e-4,
        accountant="rdp",
    )
    assert record["privacy"]["epsilon"]["rdp"] == pytest.approx(want, rel=1e-9)
    assert record["history"]["epsilon"][-1] == pytest.approx(want, rel=1e-6)


def test_target_epsilon_stops_before_the_step_that_would_exceed_it(tmp_path: Path) -> None:
    privacy = PrivacyConfig(noise_multiplier=1.2, target_epsilon=2.0, delta=1e-4)
    config = TrainConfig(model="logreg", dataset="synthetic", epochs=20, batch_size=80, privacy=privacy, **FAST)
    plan = plan_for(config).privacy
    assert plan is not None and plan.budget_limited
    result = train(config, run_dir=tmp_path / "run")
    ledger = PrivacyLedger.load(tmp_path / "run")
    assert result.privacy is not None and result.privacy["stopped_by_budget"]
    assert ledger.steps == plan.max_steps < plan.planned_steps
    q = 80 / 800
    assert ledger.epsilon(1e-4, "rdp") <= 2.0
    one_more = epsilon(
        dp_event(noise_multiplier=1.2, sampling_rate=q, steps=ledger.steps + 1), delta=1e-4, accountant="rdp"
    )
    assert one_more > 2.0


def test_calibrated_run_spends_at_most_its_target(tmp_path: Path) -> None:
    privacy = PrivacyConfig(target_epsilon=4.0, delta=1e-4)
    config = TrainConfig(model="logreg", dataset="synthetic", epochs=3, batch_size=50, privacy=privacy, **FAST)
    result = train(config, run_dir=tmp_path / "run")
    assert result.privacy is not None and result.privacy["calibrated"]
    assert result.privacy["steps"] == result.privacy["planned_steps"] == math.ceil(3 * 800 / 50)
    assert 3.6 <= result.privacy["epsilon"]["rdp"] <= 4.0


def test_poisson_batches_vary_but_the_step_is_traced_once(tmp_path: Path) -> None:
    from fedmodel.central import private
    from fedmodel.central.strategy import make_strategy
    from fedmodel.central.trainer import build_compiled_model

    privacy = PrivacyConfig(noise_multiplier=1.0)
    config = TrainConfig(model="mlp", dataset="synthetic", epochs=2, batch_size=40, privacy=privacy, **FAST)
    plan = plan_for(config)
    assert plan.privacy is not None
    data = private.dp_dataset(plan.dataset.x_train, plan.dataset.y_train, plan.privacy)
    sizes = [len(batch[0]) for batch in data.take(30).as_numpy_iterator()]
    assert len(set(sizes)) > 5 and abs(sum(sizes) / 30 - 40) < 6
    model = build_compiled_model(config, plan, strategy=make_strategy("default"), steps_per_epoch=20)
    model.fit(data, epochs=1, steps_per_epoch=20, verbose=0)
    traces = model.train_function.experimental_get_tracing_count()  # Keras's own tracing (2, as non-private)
    model.fit(data, epochs=3, steps_per_epoch=20, verbose=0)  # 60 more batches of varying size
    assert model.train_function.experimental_get_tracing_count() == traces <= 2


def final_weights(run_dir: Path) -> list[np.ndarray]:
    return tf.keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()


def test_two_dp_runs_with_the_same_seed_release_different_models(tmp_path: Path) -> None:
    """Re-running a released run with its recorded seed must not reproduce it (noise and batches differ)."""
    privacy = PrivacyConfig(noise_multiplier=1.0, delta=1e-4)
    config = TrainConfig(model="logreg", dataset="digits", epochs=1, batch_size=64, seed=3, privacy=privacy, **FAST)
    first = train(config, run_dir=tmp_path / "a")
    train(config, run_dir=tmp_path / "b")
    assert first.privacy is not None and first.privacy["noise_source"] == "OS entropy (Philox)"
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(np.all(x != y) for x, y in zip(a, b, strict=True))  # every weight differs
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["seed"] == 3  # the seed is public


def test_the_tfp_engine_noise_does_not_follow_the_seed() -> None:
    # tensorflow-privacy draws under TensorFlow's global seed, which --seed sets; its optimizer is built
    # after a re-seed from OS entropy. Same seed, same initial weights, same batch: different noise.
    from fedmodel.central.strategy import make_strategy
    from fedmodel.central.trainer import build_compiled_model

    privacy = PrivacyConfig(noise_multiplier=1.0, engine="tfp", sampling="shuffle")
    config = TrainConfig(
        model="logreg", dataset="synthetic", batch_size=16, optimizer="sgd", seed=5, privacy=privacy, **FAST
    )
    plan = plan_for(config)
    x, y = plan.dataset.x_train[:16], plan.dataset.y_train[:16]
    runs = []
    for _ in range(2):
        tf.keras.utils.set_random_seed(config.seed)  # as the trainer does
        model = build_compiled_model(config, plan, strategy=make_strategy("default"), steps_per_epoch=1)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        runs.append(model.get_weights())
    assert all(np.all(a != b) for a, b in zip(*runs, strict=True))


def test_the_ledger_records_the_noise_the_model_applies_not_the_plan(tmp_path: Path) -> None:
    from fedmodel import zoo
    from fedmodel.central import private
    from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel
    from fedmodel.privacy.mechanism import GaussianMechanism

    config = TrainConfig(
        model="logreg", dataset="synthetic", batch_size=100, privacy=PrivacyConfig(noise_multiplier=1.0), **FAST
    )
    plan = plan_for(config)
    assert plan.privacy is not None and plan.privacy.noise_multiplier == 1.0
    net = zoo.build_model("logreg", input_shape=plan.dataset.info.input_shape, num_classes=10, seed=0)
    model = DPSGDModel(
        net, mechanism=GaussianMechanism(noise_multiplier=0.7, clip=1.0), dp=DPSGDConfig(expected_batch_size=100.0)
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss=tf.keras.losses.SparseCategoricalCrossentropy(True))
    ledger = private.new_ledger(plan.privacy, steps_per_epoch=8)
    callback = private.LedgerCallback(ledger, plan.privacy)
    data = private.dp_dataset(plan.dataset.x_train, plan.dataset.y_train, plan.privacy)
    model.fit(data, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[callback])
    assert [(e.noise_multiplier, e.count) for e in ledger.entries] == [(0.7, 3)]
    assert callback.noise_multiplier == 0.7

    tfp_config = TrainConfig(
        model="logreg",
        dataset="synthetic",
        batch_size=100,
        optimizer="sgd",
        privacy=PrivacyConfig(noise_multiplier=0.4, engine="tfp", sampling="shuffle"),
        **FAST,
    )
    tfp_plan = plan_for(tfp_config).privacy
    assert tfp_plan is not None
    reference = private.compile_private(
        zoo.build_model("logreg", input_shape=plan.dataset.info.input_shape, num_classes=10, seed=0),
        tfp_config,
        tfp_plan,
        optimizer=tf.keras.optimizers.SGD(0.1),
    )
    assert private.released_noise_multiplier(reference) == pytest.approx(0.4, rel=1e-7)  # its float32 stddev


def test_tensorflow_privacy_reference_engine_trains_and_is_recorded(tmp_path: Path) -> None:
    privacy = PrivacyConfig(noise_multiplier=1.0, engine="tfp", sampling="shuffle")
    config = TrainConfig(
        model="logreg", dataset="synthetic", epochs=1, batch_size=16, optimizer="sgd", privacy=privacy, **FAST
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.privacy is not None and result.privacy["engine"] == "tfp"
    assert PrivacyLedger.load(tmp_path / "run").steps == 800 // 16


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "neither"),
        ({"noise_multiplier": -1.0}, "noise_multiplier must be a number >= 0, got -1.0"),
        ({"noise_multiplier": 1.0, "delta": 2.0}, "delta must be in (0, 1), got 2.0"),
        ({"target_epsilon": 0.0}, "target_epsilon must be a number > 0"),
        ({"noise_multiplier": 1.0, "engine": "tfp"}, "sampling 'shuffle'"),
    ],
)
def test_bad_privacy_settings_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        PrivacyConfig(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(err.value)


def test_a_budget_that_allows_no_step_is_refused_before_training() -> None:
    privacy = PrivacyConfig(noise_multiplier=0.8, target_epsilon=2.0, delta=1e-4)  # one step costs > 2
    config = TrainConfig(model="logreg", dataset="synthetic", batch_size=80, privacy=privacy, **FAST)
    with pytest.raises(ConfigError, match="does not allow even one step"):
        plan_for(config)


def test_batch_larger_than_the_data_is_refused_before_training() -> None:
    config = TrainConfig(
        model="logreg", dataset="synthetic", batch_size=5000, privacy=PrivacyConfig(noise_multiplier=1.0)
    )
    with pytest.raises(ConfigError, match="batch_size=5000 > examples="):
        plan_for(config)


def test_dp_sgd_under_mixed_bfloat16_trains_with_float32_norms(tmp_path: Path) -> None:
    privacy = PrivacyConfig(noise_multiplier=0.5, delta=1e-4)
    config = TrainConfig(
        model="cnn", dataset="synthetic", epochs=2, batch_size=50, precision="mixed_bfloat16", privacy=privacy, **FAST
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.precision == "mixed_bfloat16" and result.privacy is not None
    assert result.privacy["engine"] == "fast"
    assert result.history["loss"][-1] < result.history["loss"][0]
