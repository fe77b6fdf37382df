"""Final metrics from logits, in numpy: loss, accuracy, macro-F1 and AUC where they apply.

Shared by central training, federated evaluation and reports, so every mode reports the same numbers.
For next-token tasks the logits are (batch, time, classes) and every position counts as one prediction;
macro-F1 and AUC are reported for classification only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy of ``labels`` under ``logits`` (natural log)."""
    z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    y = labels.reshape(-1).astype(np.int64)
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, *, task: str = "classification", detailed: bool = True
) -> dict[str, Any]:
    """``loss``, ``accuracy`` and, for classification, ``macro_f1`` and ``auc`` (one-vs-rest, macro).

    ``detailed=False`` skips macro-F1 and AUC (scikit-learn, ~15 ms on 1,000 examples).

    ``auc`` is ``None`` when it is undefined: a test set that lacks some class.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {logits.shape} do not match labels {labels.shape}")
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    predictions = flat_logits.argmax(axis=1)
    out: dict[str, Any] = {
        "loss": cross_entropy(flat_logits, flat_labels),
        "accuracy": float(np.mean(predictions == flat_labels)),
        "examples": int(labels.shape[0]),
    }
    if task == "next-token":
        out["perplexity"] = math.exp(min(out["loss"], 700.0))
        return out
    if not detailed:  # loss and accuracy only: cheap enough for every federated round
        return out
    num_classes = flat_logits.shape[1]
    out["macro_f1"] = float(
        f1_score(flat_labels, predictions, average="macro", labels=np.arange(num_classes), zero_division=0)
    )
    present = np.unique(flat_labels)
    auc: float | None = None
    if len(present) == num_classes:
        probs = softmax(flat_logits)
        auc = float(
            roc_auc_score(flat_labels, probs[:, 1])
            if num_classes == 2
            else roc_auc_score(flat_labels, probs, multi_class="ovr", average="macro")
        )
    out["auc"] = auc
    return out
