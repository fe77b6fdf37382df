"""One-run lower bounds: closed forms, the delta term, validity on an exactly eps-DP mechanism, abstention."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedmodel.audit import onerun


def test_all_right_guesses_match_the_closed_form() -> None:
    # delta = 0 and v = r: p(eps) = q^r with q = 1 / (1 + e^-eps), so the bound solves q^r = 1 - c:
    # r = 100, c = 0.95: q = 0.05^(1/100) = 0.970487..., eps = log(0.970487 / 0.029513) = 3.4930...
    q = 0.05 ** (1 / 100)
    expected = math.log(q / (1 - q))
    got = onerun.epsilon_lower_bound(m=1000, r=100, v=100, delta=0.0, confidence=0.95)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got == pytest.approx(3.4930, abs=1e-4)


def test_half_right_refutes_nothing() -> None:
    # v = r / 2 is what a coin flip gets: no epsilon >= 0 is refuted.
    assert onerun.epsilon_lower_bound(m=1000, r=200, v=100, delta=1e-5) == 0.0


def test_p_value_without_delta_is_the_binomial_tail() -> None:
    eps, r, v = 1.3, 50, 38
    q = math.exp(eps) / (1 + math.exp(eps))
    assert onerun.p_value(m=100, r=r, v=v, epsilon=eps, delta=0.0) == pytest.approx(stats.binom.sf(v - 1, r, q))


def test_p_value_delta_term_by_hand() -> None:
    # r = 3, v = 2, eps = 0 (q = 1/2): P[B >= 2] = 4/8. The delta term's alpha = max over i of
    # P[2 - i <= B < 2] / i: i = 1: P[B = 1] = 3/8; i = 2: (3/8 + 1/8) / 2 = 2/8; so alpha = 3/8.
    # p = 4/8 + 2 * m * delta * 3/8 with m = 10, delta = 0.01: 0.5 + 0.075.
    assert onerun.p_value(m=10, r=3, v=2, epsilon=0.0, delta=0.01) == pytest.approx(0.575)


def test_delta_weakens_the_bound() -> None:
    kwargs = {"m": 1000, "r": 100, "v": 95}
    pure = onerun.epsilon_lower_bound(**kwargs, delta=0.0)
    approx = onerun.epsilon_lower_bound(**kwargs, delta=1e-5)
    loose = onerun.epsilon_lower_bound(**kwargs, delta=1e-4)
    assert pure > approx > loose > 0


def test_bound_is_where_the_p_value_crosses() -> None:
    kwargs = {"m": 500, "r": 60, "v": 50, "delta": 1e-5}
    eps = onerun.epsilon_lower_bound(**kwargs, confidence=0.95)
    assert onerun.p_value(**kwargs, epsilon=eps) < 0.05
    assert onerun.p_value(**kwargs, epsilon=eps + 1e-4) >= 0.05


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_bound_is_valid_for_an_exactly_dp_mechanism(epsilon: float) -> None:
    # Randomized response on the secret bits is exactly eps-DP: a sound bound exceeds eps in at most 5% of
    # audits (a bound that forgot the confidence, or the union bound over settings, would exceed it far more).
    rng = np.random.default_rng(7)
    m, trials = 300, 80
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))
    bounds = []
    for _ in range(trials):
        included = rng.random(m) < 0.5
        said_in = np.where(rng.random(m) < keep, included, ~included)
        scores = said_in + rng.random(m) * 0.5  # ties broken at random
        bounds.append(onerun.audit_scores(scores, included, delta=0.0).epsilon_lower_bound)
    assert sum(b > epsilon for b in bounds) <= 0.05 * trials
    # ... and the audit is not vacuous: the median audit proves a fifth of the true epsilon or more
    assert np.median(bounds) > 0.2 * epsilon


def test_perfect_scores_give_a_large_bound_and_random_scores_none() -> None:
    rng = np.random.default_rng(3)
    included = rng.random(1000) < 0.5
    perfect = onerun.audit_scores(included.astype(float), included, delta=1e-5)
    assert perfect.epsilon_lower_bound > 2.5
    assert perfect.correct >= 0.99 * perfect.guesses
    noise = onerun.audit_scores(rng.normal(size=1000), included, delta=1e-5)
    assert noise.epsilon_lower_bound < 0.5


def test_guess_counts_top_and_bottom() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    included = np.array([True, False, False, False, True])
    # top 2 (0.9, 0.8): one included; bottom 2 (0.1, 0.2): both excluded -> 3 right of 4.
    assert onerun.guess_counts(scores, included, k_pos=2, k_neg=2) == (4, 3)
    assert onerun.guess_counts(scores, included, k_pos=0, k_neg=1) == (1, 1)
    with pytest.raises(ValueError, match="k_pos"):
        onerun.guess_counts(scores, included, k_pos=4, k_neg=2)


def test_union_bound_over_settings() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(200) < 0.5
    scores = included + rng.normal(scale=0.6, size=200)
    one = onerun.audit_scores(scores, included, delta=0.0, settings=[(20, 20)])
    many = onerun.audit_scores(scores, included, delta=0.0, settings=[(20, 20), (10, 10), (40, 0)])
    single = onerun.epsilon_lower_bound(m=200, r=one.guesses, v=one.correct, delta=0.0)
    assert one.epsilon_lower_bound == pytest.approx(single)
    # tried alone at 95% vs at 1 - 0.05/3 among three: the same setting proves less in company
    split = onerun.epsilon_lower_bound(m=200, r=one.guesses, v=one.correct, delta=0.0, confidence=1 - 0.05 / 3)
    assert split < single
    assert many.settings_tried == 3
    assert many.epsilon_lower_bound >= split


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 10, "r": 11, "v": 1}, "v .correct. <= r"),
        ({"m": 10, "r": 5, "v": 6}, "v .correct. <= r"),
        ({"m": 10, "r": 5, "v": 2.5}, "v must be an integer"),
    ],
)
def test_bad_counts(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        onerun.epsilon_lower_bound(**kwargs, delta=1e-5)  # type: ignore[arg-type]


def test_bad_scores() -> None:
    with pytest.raises(ValueError, match="1 are not"):
        onerun.audit_scores(np.array([0.1, np.nan]), np.array([True, False]), delta=1e-5)
    with pytest.raises(ValueError, match="equal-length"):
        onerun.audit_scores(np.zeros(3), np.zeros(2, bool), delta=1e-5)


def _p_value_loop(m: int, r: int, v: int, eps: float, delta: float) -> float:
    # The paper's Appendix D p-value written as its loop, independently of the vectorised module code.
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, total / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize("m", [100, 1000])
@pytest.mark.parametrize(("r", "v"), [(10, 10), (50, 40), (100, 61), (100, 90), (7, 3)])
@pytest.mark.parametrize("eps", [0.0, 0.7, 2.5])
@pytest.mark.parametrize("delta", [0.0, 1e-5, 1e-3])
def test_p_value_equals_the_papers_loop(m: int, r: int, v: int, eps: float, delta: float) -> None:
    assert onerun.p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(
        _p_value_loop(m, r, v, eps, delta), rel=1e-9, abs=1e-15
    )
