"""Empirical privacy auditing: what an attacker measurably learns, beside the epsilon a run claims.

- :mod:`.onerun`: epsilon lower bounds from guesses about secret canaries (Steinke, Nasr & Jagielski 2023);
- :mod:`.canaries`: example canaries for central runs and client canaries for federated runs, drawn from
  OS entropy (never ``--seed``);
- :mod:`.membership`: membership-inference attacks (loss threshold, offline LiRA) and ROC metrics.
"""
