"""End-to-end central training on small real and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from fedmodel.central.config import TrainConfig
from fedmodel.central.trainer import train
from fedmodel.errors import ConfigError


def test_run_directory_holds_model_record_checkpoint_and_logs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = TrainConfig(model="mlp", dataset="synthetic", epochs=3, hparams={"hidden": (32,)})
    result = train(config, run_dir=run_dir)

    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["model"] == "mlp"
    assert record["versions"]["tensorflow"] == tf.__version__
    assert record["epochs_run"] == 3 == len(record["history"]["loss"])
    assert record["metrics"]["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert (run_dir / "checkpoints" / "best.weights.h5").is_file()
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging or resume points left
    assert not (run_dir / "resume").exists()

    # The saved model reproduces the recorded test accuracy.
    from fedmodel.data import load_dataset

    data = load_dataset("synthetic")
    model = tf.keras.models.load_model(run_dir / "model.keras")
    accuracy = float(np.mean(model.predict(data.x_test, verbose=0).argmax(axis=1) == data.y_test))
    assert accuracy == pytest.approx(record["metrics"]["accuracy"])
    for key in ("loss", "accuracy", "macro_f1", "auc"):
        assert key in record["metrics"]


def test_cnn_on_digits_reaches_95_percent(tmp_path: Path) -> None:
    config = TrainConfig(model="cnn", dataset="digits", epochs=20, batch_size=32, learning_rate=3e-3, tensorboard=False)
    result = train(config, run_dir=tmp_path / "digits")
    assert result.metrics["accuracy"] >= 0.95, result.metrics


def test_a_non_private_run_is_reproducible_bit_for_bit(tmp_path: Path) -> None:
    """Without DP, --seed decides everything: the same config gives the same weights, bit for bit."""
    config = TrainConfig(
        model="mlp", dataset="digits", epochs=1, batch_size=64, seed=3, tensorboard=False, checkpoints=False
    )
    train(config, run_dir=tmp_path / "a")
    train(config, run_dir=tmp_path / "b")
    a = tf.keras.models.load_model(tmp_path / "a" / "model.keras").get_weights()
    b = tf.keras.models.load_model(tmp_path / "b" / "model.keras").get_weights()
    initial = TrainConfig(**{**config.to_dict(), "seed": 4})  # type: ignore[arg-type]
    train(initial, run_dir=tmp_path / "c")
    c = tf.keras.models.load_model(tmp_path / "c" / "model.keras").get_weights()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))  # the seed does matter


def test_existing_run_dir_is_refused_and_kept(tmp_path: Path) -> None:
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        train(TrainConfig(model="mlp", dataset="synthetic", epochs=1), run_dir=existing)
    assert (existing / "keep.txt").read_text() == "mine"


def test_regularization_raises_the_training_loss(tmp_path: Path) -> None:
    base = TrainConfig(model="mlp", dataset="synthetic", epochs=1, tensorboard=False, checkpoints=False)
    plain = train(base, run_dir=tmp_path / "plain")
    heavy = train(
        TrainConfig(**{**base.to_dict(), "l2": 1.0, "l1": 0.1}),  # type: ignore[arg-type]
        run_dir=tmp_path / "heavy",
    )
    # Same seed, same data: the only difference is the penalty term added to the loss.
    assert heavy.history["loss"][0] > plain.history["loss"][0] + 1.0


def test_early_stopping_stops_when_validation_stops_improving(tmp_path: Path) -> None:
    # Random labels: validation loss cannot improve for long, so patience 1 stops well before 40 epochs.
    config = TrainConfig(
        model="mlp",
        dataset="synthetic",
        epochs=40,
        learning_rate=3e-2,
        early_stopping=1,
        validation_fraction=0.3,
        hparams={"hidden": (256, 256)},
        tensorboard=False,
    )
    from fedmodel.central.plan import Plan, plan_for
    from fedmodel.data import Dataset

    plan = plan_for(config)
    rng = np.random.default_rng(1)
    noisy = Dataset(
        x_train=plan.dataset.x_train,
        y_train=rng.integers(0, plan.dataset.info.num_classes, len(plan.dataset.y_train)).astype(np.int64),
        x_test=plan.dataset.x_test,
        y_test=plan.dataset.y_test,
        info=plan.dataset.info,
        groups_train=None,
    )
    result = train(
        config, run_dir=tmp_path / "es", plan=Plan(spec=plan.spec, dataset=noisy, num_params=plan.num_params)
    )
    assert result.epochs_run < 40


def test_mixed_bfloat16_keeps_loss_and_outputs_in_float32(tmp_path: Path) -> None:
    config = TrainConfig(
        model="cnn",
        dataset="synthetic",
        epochs=2,
        precision="mixed_bfloat16",
        tensorboard=False,
        checkpoints=False,
    )
    result = train(config, run_dir=tmp_path / "bf16")
    assert result.precision == "mixed_bfloat16"
    assert np.isfinite(result.history["loss"]).all()
    model = tf.keras.models.load_model(tmp_path / "bf16" / "model.keras")
    assert model.output.dtype == tf.float32
    computes = {layer.compute_dtype for layer in model.layers if layer.weights}
    assert "bfloat16" in computes
    assert all(w.dtype == tf.float32 for w in model.weights)
    # The global policy is restored for whatever runs next in this process.
    assert tf.keras.mixed_precision.global_policy().name == "float32"
