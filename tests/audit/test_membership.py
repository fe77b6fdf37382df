"""Membership inference: per-example loss and LiRA confidence from logits, offline LiRA, ROC metrics, plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from fedmodel.audit.membership import (
    RocResult,
    advantage,
    lira_confidence,
    lira_offline_scores,
    loss_scores,
    per_example_loss,
    plot_roc,
    roc,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# per_example_loss / loss_scores
# ---------------------------------------------------------------------------------------------------------


def test_loss_equals_keras_sparse_categorical_crossentropy() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(256, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=256)
    expected = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True).numpy()
    got = per_example_loss(logits, labels)
    assert got.dtype == np.float64
    assert got.shape == (256,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_loss_hand_computed_two_classes() -> None:
    # logits (2, 0): p(class 0) = e^2 / (e^2 + 1) = 1 / (1 + e^-2), so
    #   loss(label 0) = log(1 + e^-2)     = log(1.1353352832...) = 0.1269280110...
    #   loss(label 1) = 2 + log(1 + e^-2) = 2.1269280110...
    got = per_example_loss(np.array([[2.0, 0.0], [2.0, 0.0]]), np.array([0, 1]))
    np.testing.assert_allclose(got, [0.1269280110429725, 2.1269280110429725], rtol=1e-12)
    np.testing.assert_allclose(loss_scores(np.array([[2.0, 0.0]]), np.array([0])), [-0.1269280110429725])


def test_loss_is_finite_for_extreme_logits() -> None:
    got = per_example_loss(np.array([[1000.0, 0.0, -1000.0]] * 3), np.array([0, 1, 2]))
    np.testing.assert_allclose(got, [0.0, 1000.0, 2000.0], atol=1e-12)


def test_sequence_loss_is_mean_over_positions() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 7, 5))
    labels = rng.integers(0, 5, size=(4, 7))
    per_token = per_example_loss(logits.reshape(28, 5), labels.reshape(28)).reshape(4, 7)
    got = per_example_loss(logits, labels)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, per_token.mean(axis=1), rtol=1e-12)
    # Naive check of one token: -log softmax.
    assert per_token[2, 3] == pytest.approx(-math.log(_softmax(logits[2, 3])[labels[2, 3]]), rel=1e-12)


@pytest.mark.parametrize("shape", [(6,), (6, 1)])
def test_binary_loss_is_sigmoid_cross_entropy(shape: tuple[int, ...]) -> None:
    z = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, 10.0])
    y = np.array([0, 1, 1, 0, 1, 0])
    p = 1.0 / (1.0 + np.exp(-z))
    naive = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    got = per_example_loss(z.reshape(shape), y)
    np.testing.assert_allclose(got, naive, rtol=1e-9)
    # Same as two-class softmax over logits (0, z).
    two_class = per_example_loss(np.stack([np.zeros_like(z), z], axis=1), y)
    np.testing.assert_allclose(got, two_class, rtol=1e-9)
    # Extreme binary logits stay finite: -log(1 - sigmoid(1000)) = 1000.
    np.testing.assert_allclose(per_example_loss(np.array([1000.0, -1000.0]), np.array([0, 1])), [1000.0, 1000.0])


@pytest.mark.parametrize(
    ("logits_shape", "labels_shape", "fragment"),
    [
        ((5, 3), (4,), "(5, 3)"),
        ((5, 3), (5, 1), "(5, 1)"),
        ((5, 4, 3), (5,), "(5, 4, 3)"),
        ((5, 4, 3), (5, 3), "(5, 3)"),
        ((2, 3, 4, 5), (2, 3, 4), "(2, 3, 4, 5)"),
        ((5,), (4,), "(4,)"),
        ((5, 1), (5, 2), "(5, 2)"),
    ],
)
def test_bad_shapes_raise_with_shapes(
    logits_shape: tuple[int, ...], labels_shape: tuple[int, ...], fragment: str
) -> None:
    logits = np.zeros(logits_shape)
    labels = np.zeros(labels_shape, dtype=np.int64)
    with pytest.raises(ValueError, match="expected") as info:
        per_example_loss(logits, labels)
    assert fragment in str(info.value)
    with pytest.raises(ValueError):
        lira_confidence(logits, labels)


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        per_example_loss(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="non-integer"):
        per_example_loss(np.zeros((2, 3)), np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        per_example_loss(np.zeros(2), np.array([0, 2]))


# ---------------------------------------------------------------------------------------------------------
# lira_confidence
# ---------------------------------------------------------------------------------------------------------


def test_lira_confidence_equals_naive_log_odds() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, size=(100, 6))
    labels = rng.integers(0, 6, size=100)
    p = _softmax(logits)[np.arange(100), labels]
    np.testing.assert_allclose(lira_confidence(logits, labels), np.log(p / (1 - p)), rtol=1e-9, atol=1e-12)

    z = rng.normal(0.0, 2.0, size=50)
    y = rng.integers(0, 2, size=50)
    pb = 1.0 / (1.0 + np.exp(-z))
    p_label = np.where(y == 1, pb, 1 - pb)
    np.testing.assert_allclose(lira_confidence(z, y), np.log(p_label / (1 - p_label)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lira_confidence(z[:, None], y), lira_confidence(z, y))

    seq = rng.normal(size=(3, 4, 5))
    seq_labels = rng.integers(0, 5, size=(3, 4))
    per_token = lira_confidence(seq.reshape(12, 5), seq_labels.reshape(12)).reshape(3, 4)
    np.testing.assert_allclose(lira_confidence(seq, seq_labels), per_token.mean(axis=1), rtol=1e-12)


def test_lira_confidence_is_finite_for_extreme_logits() -> None:
    got = lira_confidence(np.array([[1000.0, 0.0, 0.0], [1000.0, 0.0, 0.0]]), np.array([0, 1]))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [1000.0 - math.log(2.0), -1000.0], rtol=1e-12)
    np.testing.assert_allclose(lira_confidence(np.array([1000.0, 1000.0]), np.array([1, 0])), [1000.0, -1000.0])


# ---------------------------------------------------------------------------------------------------------
# Offline LiRA
# ---------------------------------------------------------------------------------------------------------


def _population(seed: int, n: int = 2000, k: int = 8, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray, int]:
    """Targets whose difficulty varies a lot (mu_i ~ N(0, 3^2)); the first half are members (+1 confidence)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, size=n)
    members = n // 2
    target = mu + rng.normal(0.0, noise, size=n)
    target[:members] += 1.0
    shadow_out = mu + rng.normal(0.0, noise, size=(k, n))
    return target, shadow_out, members


@pytest.mark.parametrize("fixed_variance", [True, False])
def test_lira_beats_loss_attack_when_difficulty_varies(fixed_variance: bool) -> None:
    target, shadow_out, m = _population(seed=3)
    scores = lira_offline_scores(target, shadow_out, fixed_variance=fixed_variance)
    assert scores.shape == target.shape
    assert (scores <= 0).all()
    lira = roc(scores[:m], scores[m:])
    raw = roc(target[:m], target[m:])  # the loss attack's ranking: raw confidence, difficulty ignored
    # Expected: LiRA ~ Phi(1 / (0.3 * sqrt(2 * 1.125))) ~ 0.99; raw ~ Phi(1 / sqrt(2 * 9.09)) ~ 0.59.
    assert lira.auc > 0.9
    assert raw.auc < lira.auc - 0.1
    assert lira.tpr_at(0.01) > 0.5 > raw.tpr_at(0.01)
    # A "LiRA" that ignores the per-example mean (one global mean) is no better than the raw confidence.
    ignoring_mu = roc(target[:m] - shadow_out.mean(), target[m:] - shadow_out.mean())
    assert ignoring_mu.auc < 0.7


def test_lira_offline_scores_formula() -> None:
    shadow = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 7.0]])  # means (1, 1, 6); deviations ±1, 0, ±1
    target = np.array([1.5, 0.0, 6.0])
    # Pooled std: sqrt((1 + 1 + 0 + 0 + 1 + 1) / (3 * (2 - 1))) = sqrt(4/3).
    expected = scipy.stats.norm.logcdf((target - np.array([1.0, 1.0, 6.0])) / math.sqrt(4 / 3))
    np.testing.assert_allclose(lira_offline_scores(target, shadow), expected, rtol=1e-12)
    # Per-example std (ddof=1): sqrt(2), 0 -> floor, sqrt(2); the zero-std example stays finite.
    per_example = lira_offline_scores(target, shadow, fixed_variance=False)
    assert np.isfinite(per_example).all()
    assert per_example[0] == pytest.approx(scipy.stats.norm.logcdf(0.5 / math.sqrt(2)), rel=1e-12)
    assert per_example[1] < -1e6  # 1 below a constant shadow confidence: as far OUT as it gets
    # One shadow with fixed variance works (the order is that of phi - mu).
    one = lira_offline_scores(target, shadow[:1])
    assert np.isfinite(one).all()
    np.testing.assert_array_equal(np.argsort(one), np.argsort(target - shadow[0]))


def test_lira_offline_scores_validates() -> None:
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        lira_offline_scores(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        lira_offline_scores(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        lira_offline_scores(np.zeros((3, 1)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 shadow"):
        lira_offline_scores(np.zeros(3), np.zeros((1, 3)), fixed_variance=False)
    with pytest.raises(ValueError, match="at least 1 shadow"):
        lira_offline_scores(np.zeros(3), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="1 of 3 not finite"):
        lira_offline_scores(np.array([0.0, np.nan, 1.0]), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------------------


def test_roc_perfect_separation() -> None:
    result = roc(np.arange(100, 200, dtype=float), np.arange(0, 100, dtype=float))
    assert result.auc == 1.0
    assert result.tpr_at(0.001) == 1.0
    assert result.tpr_at(0.0) == 1.0
    assert advantage(result) == 1.0
    summary = result.to_dict()
    assert summary == {"auc": 1.0, "tpr_at_fpr_0.1%": 1.0, "tpr_at_fpr_1%": 1.0, "members": 100, "nonmembers": 100}
    assert json.loads(json.dumps(summary)) == summary
    assert all(type(summary[key]) is float for key in ("auc", "tpr_at_fpr_0.1%", "tpr_at_fpr_1%"))
    assert type(summary["members"]) is int and type(summary["nonmembers"]) is int


def test_roc_reversed_separation() -> None:
    result = roc(np.zeros(10), np.ones(30))
    assert result.auc == 0.0
    assert result.tpr_at(0.5) == 0.0
    assert result.tpr_at(1.0) == 1.0
    assert advantage(result) == 0.0
    assert (result.members, result.nonmembers) == (10, 30)


def test_roc_identical_distributions_is_chance() -> None:
    rng = np.random.default_rng(4)
    result = roc(rng.normal(size=20_000), rng.normal(size=20_000))
    assert abs(result.auc - 0.5) < 0.02
    assert abs(result.tpr_at(0.01) - 0.01) < 0.01
    assert advantage(result) < 0.03


def test_roc_validates() -> None:
    with pytest.raises(ValueError, match="1 of 3 not finite"):
        roc(np.array([0.1, np.nan, 0.3]), np.array([0.2]))
    with pytest.raises(ValueError, match="2 of 2 not finite"):
        roc(np.array([0.1]), np.array([np.inf, np.nan]))
    with pytest.raises(ValueError, match="member_scores, got none"):
        roc(np.array([]), np.array([0.2]))
    with pytest.raises(ValueError, match="nonmember_scores, got none"):
        roc(np.array([0.1]), np.array([]))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        roc(np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        roc(np.array([1.0]), np.array([0.0])).tpr_at(1.5)


# ---------------------------------------------------------------------------------------------------------
# plot_roc
# ---------------------------------------------------------------------------------------------------------


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    target, shadow_out, m = _population(seed=5, n=400)
    scores = lira_offline_scores(target, shadow_out)
    curves: dict[str, RocResult] = {
        "LiRA (offline)": roc(scores[:m], scores[m:]),
        "loss": roc(target[:m], target[m:]),
    }
    out = tmp_path / "plots" / "roc.png"
    written = plot_roc(out, curves, title="Membership inference")
    assert written == out
    data = out.read_bytes()
    assert len(data) > 0
    assert data.startswith(PNG_SIGNATURE)
    assert not [p for p in out.parent.iterdir() if p.name != "roc.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="at least one ROC curve"):
        plot_roc(tmp_path / "empty.png", {}, title="none")
