"""audit.json's one-run section and its sentence: what the figures mean, in each case."""

from __future__ import annotations

import json
from pathlib import Path

from fedmodel.audit.onerun import OneRunAudit
from fedmodel.audit.record import meaning, one_run_record, tightest_claim, update_audit_file


def _audit(bound: float, *, delta: float = 1e-5, canaries: int = 1000) -> OneRunAudit:
    return OneRunAudit(canaries=canaries, included=500, guesses=100, correct=90, k_pos=100, k_neg=0,
                       settings_tried=14, delta=delta, confidence=0.95, epsilon_lower_bound=bound)  # fmt: skip


def test_the_sentence_says_which_case_it_is() -> None:
    assert "consistent with the claim" in meaning(_audit(1.2), 3.0)
    assert "refuted: a privacy bug" in meaning(_audit(4.0), 3.0)
    assert "claims no differential privacy" in meaning(_audit(2.0), None)
    assert "not (2, 1e-05)-DP" in meaning(_audit(2.0), None)
    nothing = meaning(_audit(0.0), 3.0)
    assert "90 of 100 guesses right do not refute even epsilon 0" in nothing and "delta term" not in nothing
    # a large delta (2 m delta = 0.4) is what stops the bound, and the sentence says so
    assert "delta term (2 m delta = 0.4) dominates" in meaning(_audit(0.0, delta=1e-3, canaries=200), 35.0)


def test_record_flags_a_refuted_claim_and_the_file_keeps_other_sections(tmp_path: Path) -> None:
    record = one_run_record(_audit(4.0), unit="example", claimed_epsilon=3.0, accountant="rdp", score="-loss")
    assert record["exceeds_claim"] and record["claimed_epsilon"] == 3.0 and record["epsilon_lower_bound"] == 4.0
    assert not one_run_record(_audit(4.0), unit="example", claimed_epsilon=float("inf"), accountant=None,
                              score="-loss")["exceeds_claim"]  # fmt: skip
    update_audit_file(tmp_path, "membership", {"auc": 0.5})
    update_audit_file(tmp_path, "one_run", record)
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["membership"] == {"auc": 0.5} and data["one_run"]["unit"] == "example"


def test_the_claim_tested_is_the_smallest_reported() -> None:
    assert tightest_claim({"rdp": 7.9, "pld": 6.8}) == (6.8, "pld")
    assert tightest_claim({"rdp": 2.0, "pld": "n/a: too slow"}) == (2.0, "rdp")
    assert tightest_claim({"rdp": float("inf")}) == (None, None)
    assert tightest_claim({}) == (None, None)
