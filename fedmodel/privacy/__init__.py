"""Differential privacy for fedmodel: accounting, the privacy ledger, calibration and budget reports.

Vocabulary:

- **unit of privacy**: what one guarantee protects, one *example* (central DP-SGD) or one *client*
  with all of its data (federated DP-FedAvg); the adjacency is add-or-remove-one of that unit.
- **step**: one noisy release (a DP-SGD step, or one round's noised aggregate), a Poisson-subsampled
  Gaussian mechanism with sampling rate ``q`` and noise multiplier ``z`` (noise std = ``z`` x clip norm).
- **DpEvent**: dp-accounting's description of what ran; a **ledger** composes the events of a run.
- **accountant**: turns events into epsilon at a delta (``"rdp"`` or ``"pld"``).

Modules: ``accounting`` (events -> epsilon; ``gaussian``, its closed-form Gaussian epsilon, and
``rdp_repair``, its RDP check for tiny ``q``), ``ledger`` (what ran; budget checks), ``calibration``
(noise for a target epsilon), ``budget`` (plans), ``report`` (tables, Markdown, plots), ``budget_cli``
(the ``fedmodel budget`` command), ``dp_plan``, ``config`` and ``sampling_math`` (settings and their
arithmetic), ``mechanism`` (the Gaussian mechanism and its event), ``randomness`` (OS-entropy noise
sources), ``discrete_gaussian`` and ``distributed_dp`` (the discrete Gaussian and the distributed discrete
Gaussian mechanism of secure aggregation). None of these imports TensorFlow (``tests/privacy/test_layout.py``
checks it); the TensorFlow DP-SGD engine is the subpackage :mod:`fedmodel.privacy.engine`. This package
imports no submodule; import the ones you need (``from fedmodel.privacy.ledger import PrivacyLedger``).
See ``docs/privacy.md``.
"""
