"""Membership-inference attacks on a trained model, and the ROC metrics that score them.

Two attacks, both computed from a model's raw logits on known members (training examples) and known
non-members (held-out examples):

- the loss-threshold attack (Yeom et al. 2018): :func:`loss_scores` is minus the per-example
  cross-entropy, so examples the model fits well look like members;
- offline LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles"):
  :func:`lira_confidence` turns logits into the logit-scaled confidence ``phi = log p_y - log(1 - p_y)``,
  and :func:`lira_offline_scores` compares the target model's ``phi`` on each example with a Gaussian fitted
  to the ``phi`` of shadow models that did *not* train on it, so an example that is easy for every model
  does not look like a member just because its loss is low.

:func:`roc` turns member and non-member scores into a :class:`RocResult` (ROC curve, AUC, TPR at a low FPR),
:func:`advantage` gives the membership advantage ``max(TPR - FPR)``, and :func:`plot_roc` draws curves on
log-log axes, as the LiRA paper recommends. Everything here is numpy/scipy/scikit-learn; nothing imports
TensorFlow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.special
import scipy.stats
from sklearn.metrics import auc as _sk_auc
from sklearn.metrics import roc_curve as _sk_roc_curve

from fedmodel.atomic import atomic_write_with

__all__ = [
    "RocResult",
    "advantage",
    "lira_confidence",
    "lira_offline_scores",
    "loss_scores",
    "per_example_loss",
    "plot_roc",
    "roc",
]

#: Smallest standard deviation used for a Gaussian fitted to shadow confidences (a constant shadow
#: confidence would otherwise divide by zero).
STD_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------------------
# Logits -> per-example loss and confidence
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """Validated logits and labels: ``kind`` is "binary", "multiclass" or "sequence"."""

    kind: str
    logits: np.ndarray  # float64; (N,) binary, (M, C) multiclass / flattened sequence
    labels: np.ndarray  # int64; (N,) binary, (M,) otherwise
    shape: tuple[int, ...]  # the per-token shape to reduce from: (N,) or (N, T)


def _integer_labels(labels: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    if labels.dtype == np.bool_:
        return labels.astype(np.int64)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"expected integer {what} labels, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise ValueError(f"expected integer {what} labels, got {int(bad.sum())} non-integer value(s)")
    return labels.astype(np.int64).reshape(shape)


def _prepare(logits: np.ndarray, labels: np.ndarray) -> _Prepared:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    binary = z.ndim == 1 or (z.ndim == 2 and z.shape[1] == 1)
    if binary:
        n = z.shape[0]
        if y.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"expected labels of shape ({n},) for binary logits of shape {z.shape}, got labels of shape {y.shape}"
            )
        y = _integer_labels(y, (n,), "binary")
        if ((y != 0) & (y != 1)).any():
            raise ValueError(f"expected binary labels in {{0, 1}}, got values {np.unique(y)[:10].tolist()}")
        return _Prepared("binary", z.reshape(n), y, (n,))
    if z.ndim == 2:
        n, c = z.shape
        if y.shape != (n,):
            raise ValueError(f"expected labels of shape ({n},) for logits of shape {z.shape}, got {y.shape}")
        shape: tuple[int, ...] = (n,)
        kind = "multiclass"
    elif z.ndim == 3:
        n, t, c = z.shape
        if y.shape != (n, t):
            raise ValueError(
                f"expected labels of shape ({n}, {t}) for sequence logits of shape {z.shape}, got {y.shape}"
            )
        shape = (n, t)
        kind = "sequence"
    else:
        raise ValueError(f"expected logits of shape (N,), (N, 1), (N, C) or (N, T, C), got {z.ndim}-D shape {z.shape}")
    y = _integer_labels(y, shape, "class")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"expected class labels in [0, {c}), got values from {y.min()} to {y.max()}")
    return _Prepared(kind, z.reshape(-1, c), y.reshape(-1), shape)


def _reduce(values: np.ndarray, prep: _Prepared) -> np.ndarray:
    """Per-token values back to per-example: the mean over T for sequences."""
    out = values.reshape(prep.shape)
    return out.mean(axis=1) if prep.kind == "sequence" else out


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each example, from raw logits, in float64.

    Args:
        logits: ``(N, C)`` class logits with integer ``labels`` of shape ``(N,)``; ``(N, T, C)`` sequence
            logits with ``labels`` of shape ``(N, T)`` (the loss is the mean over the T positions); or
            ``(N,)`` / ``(N, 1)`` binary logits with labels in {0, 1} (sigmoid cross-entropy).
        labels: Integer labels (integral floats and booleans are accepted).

    Returns:
        ``(N,)`` float64 losses, ``-log p(label)``; computed with a stable log-softmax (or softplus), so
        finite for any finite logits.

    Raises:
        ValueError: Shapes that do not match one of the layouts above, or labels out of range.
    """
    prep = _prepare(logits, labels)
    if prep.kind == "binary":
        z, y = prep.logits, prep.labels
        # -log sigmoid(z) for y=1, -log(1 - sigmoid(z)) for y=0, i.e. softplus(z) - y*z, written stably.
        loss = np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))
    else:
        log_probs = scipy.special.log_softmax(prep.logits, axis=1)
        loss = -np.take_along_axis(log_probs, prep.labels[:, None], axis=1)[:, 0]
    return _reduce(loss, prep)


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Loss-threshold attack scores: ``-per_example_loss`` (higher = more likely a member).

    Args:
        logits: As for :func:`per_example_loss`.
        labels: As for :func:`per_example_loss`.

    Returns:
        ``(N,)`` float64 scores.
    """
    return -per_example_loss(logits, labels)


def lira_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence ``phi = log p_y - log(1 - p_y)`` of each example.

    Computed without forming ``p_y``: for C classes ``phi = z_y - logsumexp(z_j, j != y)``, for binary
    logits ``phi = z`` when the label is 1 and ``-z`` when it is 0. So ``phi`` stays finite when the model
    is certain (``p_y`` rounds to 1), which is exactly where members and non-members differ most.

    Args:
        logits: As for :func:`per_example_loss`.
        labels: As for :func:`per_example_loss`.

    Returns:
        ``(N,)`` float64 confidences; for sequences the mean over the T positions.
    """
    prep = _prepare(logits, labels)
    if prep.kind == "binary":
        phi = np.where(prep.labels == 1, prep.logits, -prep.logits)
    else:
        z = prep.logits
        rows = np.arange(z.shape[0])
        z_y = z[rows, prep.labels]
        others = z.copy()
        others[rows, prep.labels] = -np.inf
        phi = z_y - scipy.special.logsumexp(others, axis=1)
    return _reduce(phi, prep)


# --------------------------------------------------------------------------------------------------------
# Offline LiRA
# --------------------------------------------------------------------------------------------------------


def _finite(name: str, values: np.ndarray) -> None:
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"expected finite {name}, got {bad} of {values.size} not finite (NaN or inf)")


def lira_offline_scores(
    target_phi: np.ndarray, shadow_phi_out: np.ndarray, *, fixed_variance: bool = True
) -> np.ndarray:
    """Offline LiRA membership scores (Carlini et al. 2022, Sec. 4, the offline variant).

    Each example gets a Gaussian fitted to the confidences of K shadow models that did not train on it
    (mean per example). The score is the one-sided log-probability that the target's confidence is at
    or above that OUT distribution, ``log Phi((phi - mu) / sigma)``: high when the target model is more
    confident on the example than models that never saw it.

    Args:
        target_phi: ``(N,)`` confidences of the target model (:func:`lira_confidence`).
        shadow_phi_out: ``(K, N)`` confidences of K shadow models, none trained on these N examples.
        fixed_variance: If True (the default; the paper's advice with few shadows), one standard
            deviation for all examples, pooled from every shadow's deviation from its example's mean
            (with K = 1 there is no such deviation, and the spread of all shadow confidences is used;
            with a shared sigma only the scale of the scores changes, not their order). If False, a
            standard deviation per example (needs K >= 2).

    Returns:
        ``(N,)`` float64 log-probabilities (<= 0; higher = more likely a member).

    Raises:
        ValueError: Mismatched shapes, too few shadows, or non-finite confidences.
    """
    phi = np.asarray(target_phi, dtype=np.float64)
    shadow = np.asarray(shadow_phi_out, dtype=np.float64)
    if phi.ndim != 1:
        raise ValueError(f"expected target_phi of shape (N,), got shape {phi.shape}")
    if shadow.ndim != 2 or shadow.shape[1] != phi.shape[0]:
        raise ValueError(
            f"expected shadow_phi_out of shape (K, {phi.shape[0]}) (K shadow models by N targets), "
            f"got shape {shadow.shape}"
        )
    k = shadow.shape[0]
    need = 1 if fixed_variance else 2
    if k < need:
        raise ValueError(f"expected at least {need} shadow model(s) (fixed_variance={fixed_variance}), got K = {k}")
    _finite("target_phi", phi)
    _finite("shadow_phi_out", shadow)
    mu = shadow.mean(axis=0)
    sigma: float | np.ndarray
    if not fixed_variance:
        sigma = np.maximum(shadow.std(axis=0, ddof=1), STD_FLOOR)
    elif k >= 2:
        pooled = float(np.sum((shadow - mu) ** 2)) / (shadow.shape[1] * (k - 1)) if shadow.size else 0.0
        sigma = max(math.sqrt(pooled), STD_FLOOR)
    else:
        sigma = max(float(shadow.std()) if shadow.size else 0.0, STD_FLOOR)
    return np.asarray(scipy.stats.norm.logcdf((phi - mu) / sigma), dtype=np.float64)


# --------------------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RocResult:
    """An attack's ROC curve (members are the positive class; higher score = member).

    Attributes:
        fpr: False-positive rates, non-decreasing from 0 to 1.
        tpr: True-positive rates at the same thresholds.
        auc: Area under the curve (0.5 = chance, 1 = perfect).
        members: Number of member scores.
        nonmembers: Number of non-member scores.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    members: int
    nonmembers: int

    def tpr_at(self, fpr_target: float) -> float:
        """The largest TPR reached at an FPR of at most ``fpr_target`` (0 if none).

        Raises:
            ValueError: ``fpr_target`` outside [0, 1].
        """
        if not 0.0 <= fpr_target <= 1.0:
            raise ValueError(f"expected an FPR target in [0, 1], got {fpr_target}")
        ok = self.fpr <= fpr_target
        return float(self.tpr[ok].max()) if ok.any() else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: AUC, TPR at 0.1% and 1% FPR, and the two sample sizes."""
        return {
            "auc": float(self.auc),
            "tpr_at_fpr_0.1%": self.tpr_at(0.001),
            "tpr_at_fpr_1%": self.tpr_at(0.01),
            "members": int(self.members),
            "nonmembers": int(self.nonmembers),
        }


def _scores(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected 1-D {name}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"expected at least one of {name}, got none")
    _finite(name, arr)
    return arr


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> RocResult:
    """ROC of an attack from its scores on known members and known non-members.

    Args:
        member_scores: ``(M,)`` scores of training examples (higher = predicted member).
        nonmember_scores: ``(N,)`` scores of held-out examples.

    Returns:
        The :class:`RocResult`; every threshold is kept, so :meth:`RocResult.tpr_at` is exact.

    Raises:
        ValueError: Empty, non-1-D, or non-finite scores.
    """
    ins = _scores("member_scores", member_scores)
    outs = _scores("nonmember_scores", nonmember_scores)
    truth = np.concatenate([np.ones(ins.size, dtype=np.int8), np.zeros(outs.size, dtype=np.int8)])
    fpr, tpr, _ = _sk_roc_curve(truth, np.concatenate([ins, outs]), drop_intermediate=False)
    return RocResult(
        fpr=np.asarray(fpr, dtype=np.float64),
        tpr=np.asarray(tpr, dtype=np.float64),
        auc=float(_sk_auc(fpr, tpr)),
        members=int(ins.size),
        nonmembers=int(outs.size),
    )


def advantage(result: RocResult) -> float:
    """Membership advantage ``max(TPR - FPR)`` over the curve (Yeom et al. 2018); 0 = chance."""
    return float(np.max(result.tpr - result.fpr))


def plot_roc(path: str | os.PathLike[str], curves: Mapping[str, RocResult], *, title: str) -> Path:
    """Write a PNG of ROC curves on log-log axes, with the chance diagonal dashed.

    The axes start at 1e-4, or at 1/n for the smallest sample n among the curves if that is larger
    (no FPR or TPR below 1/n can be measured). The legend reads ``name (AUC 0.xx, TPR@0.1% FPR x.x%)``.
    The file is written to a temp file beside ``path`` and renamed, so ``path`` is the whole PNG or
    untouched. Drawn on matplotlib's Agg canvas (no pyplot, no global backend change).

    Args:
        path: The PNG to write (its directory is created if missing).
        curves: Curve name -> :class:`RocResult`; at least one.
        title: Plot title.

    Returns:
        The written path.

    Raises:
        ValueError: No curves.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("expected at least one ROC curve to plot, got none")
    smallest = min(min(r.members, r.nonmembers) for r in curves.values())
    low = max(1e-4, 1.0 / max(smallest, 1))
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, result in curves.items():
        label = f"{name} (AUC {result.auc:.2f}, TPR@0.1% FPR {100 * result.tpr_at(0.001):.1f}%)"
        # Zero rates cannot be drawn on log axes; clipping to the axis floor keeps the curve's shape.
        ax.plot(np.maximum(result.fpr, low / 10), np.maximum(result.tpr, low / 10), label=label)
    ax.plot([low, 1.0], [low, 1.0], linestyle="--", color="grey", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1.0)
    ax.set_ylim(low, 1.0)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return atomic_write_with(path, lambda fh: fig.savefig(fh, format="png"))
