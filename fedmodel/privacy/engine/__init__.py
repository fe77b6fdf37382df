"""The DP-SGD engine: per-example clipping and Gaussian noise as a Keras train step. Imports TensorFlow.

Modules: ``dpsgd`` (:class:`~fedmodel.privacy.engine.dpsgd.DPSGDModel`, the noisy step), ``taps`` (which
layers the fast engine covers, and the forward pass that exposes them), ``per_example`` (per-layer norms and
clipped sums), ``recurrent`` (the LSTM tap), ``vectorized`` (the generic engine, ``tf.vectorized_map``),
``batches`` (Poisson and shuffled ``tf.data`` batches). This ``__init__`` imports none of them; import the
submodule you need (``from fedmodel.privacy.engine.dpsgd import DPSGDModel``). Accounting and the ledger
live in the TensorFlow-free :mod:`fedmodel.privacy`.
"""
