"""Epsilon lower bounds from one training run (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One
(1) Training Run", NeurIPS 2023).

The game: ``m`` canaries are each included in the training data with probability 1/2, by a secret coin.
After training, the auditor scores every canary (higher = "looks included"), guesses *included* for the
``k_pos`` highest scores and *excluded* for the ``k_neg`` lowest, and abstains on the rest. Of its
``r = k_pos + k_neg`` guesses, ``v`` are right.

If training is (epsilon, delta)-DP, the number of right guesses is stochastically dominated by a
``Binomial(r, e^eps / (1 + e^eps))`` up to a delta term (the paper's Theorem 5.2; Appendix D gives the
p-value computed here)::

    p(eps) = P[Binomial(r, q) >= v] + 2 m delta * max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i,
    q = 1 / (1 + e^-eps).

The lower bound at confidence ``c`` is the largest epsilon whose p-value is below ``1 - c``: had the run
been (eps, delta)-DP for any eps below the bound, guesses this good would happen with probability under
``1 - c``; a DP claim below the bound is refuted at that confidence.

The auditor may try several abstention settings (``k_pos``, ``k_neg``) after seeing the scores only if it
pays for them: :func:`audit_scores` splits ``1 - c`` evenly
over the settings it tries (a union bound), so the reported bound keeps its confidence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

#: Default confidence of a lower bound (the paper reports 95%).
CONFIDENCE = 0.95

#: Shares of the canaries guessed on, tried by :func:`audit_scores` (each as top-only and as top+bottom).
GUESS_SHARES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _check_counts(m: int, r: int, v: int) -> None:
    for name, value in (("m", m), ("r", r), ("v", v)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v (correct) <= r (guesses) <= m (canaries), got v={v}, r={r}, m={m}")


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Largest probability that an (epsilon, delta)-DP run lets the auditor get ``v`` or more of ``r`` right."""
    _check_counts(m, r, v)
    _check_delta(delta)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    # P[v - i <= Binomial(r, q) < v] for i = 1..v, each divided by i; the worst i counts.
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """The largest epsilon refuted at ``confidence`` by ``v`` right of ``r`` guesses on ``m`` canaries.

    0.0 when even epsilon = 0 is not refuted. Accurate to 1e-6 (bisection).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = 1 - confidence

    def refuted(eps: float) -> bool:
        return p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) < alpha

    if not refuted(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while refuted(hi):
        lo, hi = hi, hi * 2
        if hi > 1e4:  # p-values this small are below double precision: report what was proven
            return lo
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if refuted(mid) else (lo, mid)
    return lo


@dataclasses.dataclass(frozen=True)
class OneRunAudit:
    """The best abstention setting tried and the bound it proves (JSON-ready via :meth:`to_dict`).

    When no setting proves anything (bound 0), the setting shown is the one with the smallest p-value at
    epsilon = 0 (the guesses that came closest).
    """

    canaries: int
    included: int
    guesses: int
    correct: int
    k_pos: int
    k_neg: int
    settings_tried: int
    delta: float
    confidence: float
    epsilon_lower_bound: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def guess_counts(scores: np.ndarray, included: np.ndarray, *, k_pos: int, k_neg: int) -> tuple[int, int]:
    """(guesses, right guesses) for guessing *in* on the ``k_pos`` highest and *out* on the ``k_neg`` lowest."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m:
        raise ValueError(f"need k_pos, k_neg >= 0 and k_pos + k_neg <= {m} canaries, got {k_pos}, {k_neg}")
    order = np.argsort(scores, kind="stable")  # lowest first
    right = int(included[order[m - k_pos :]].sum()) if k_pos else 0
    right += int((~included[order[:k_neg]]).sum())
    return k_pos + k_neg, right


def guess_settings(m: int, shares: Sequence[float] = GUESS_SHARES) -> list[tuple[int, int]]:
    """The (k_pos, k_neg) settings :func:`audit_scores` tries: each share as top-only and as top+bottom."""
    settings: list[tuple[int, int]] = []
    for share in shares:
        k = max(1, round(share * m))
        for setting in ((k, 0), (k - k // 2, k // 2)):
            if setting not in settings and sum(setting) <= m:
                settings.append(setting)
    return settings


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    settings: Sequence[tuple[int, int]] | None = None,
) -> OneRunAudit:
    """The one-run lower bound from canary scores (higher = included) and the secret inclusion bits.

    Every setting in ``settings`` (default :func:`guess_settings`) is tested at confidence
    ``1 - (1 - confidence) / len(settings)``, so the best of them still holds at ``confidence``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    if scores.ndim != 1 or scores.shape != included.shape or not len(scores):
        raise ValueError(
            f"scores and included must be equal-length non-empty vectors, got shapes {scores.shape} and "
            f"{included.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"canary scores must be finite; {int((~np.isfinite(scores)).sum())} are not")
    m = len(scores)
    tried = list(settings) if settings is not None else guess_settings(m)
    each = 1 - (1 - confidence) / len(tried)
    best: OneRunAudit | None = None
    best_key: tuple[float, float] | None = None
    for k_pos, k_neg in tried:
        r, v = guess_counts(scores, included, k_pos=k_pos, k_neg=k_neg)
        bound = epsilon_lower_bound(m=m, r=r, v=v, delta=delta, confidence=each)
        # the largest bound; among settings that prove nothing, the one closest to proving eps = 0
        key = (bound, -p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta))
        if best_key is None or key > best_key:
            best_key = key
            best = OneRunAudit(
                canaries=m,
                included=int(included.sum()),
                guesses=r,
                correct=v,
                k_pos=k_pos,
                k_neg=k_neg,
                settings_tried=len(tried),
                delta=delta,
                confidence=confidence,
                epsilon_lower_bound=bound,
            )
    assert best is not None  # tried is never empty (m >= 1)
    return best
