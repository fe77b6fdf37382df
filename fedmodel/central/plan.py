"""Checks a central training request against the zoo and the data before anything runs or is written.

The model/dataset pairing itself is :func:`fedmodel.model_plan.plan_run` (shared with federated runs).

Everything here is TensorFlow-free, so bad input is rejected in well under a second and no
run directory is created for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedmodel.central.config import TrainConfig
from fedmodel.errors import ConfigError
from fedmodel.model_plan import Plan, plan_run
from fedmodel.privacy.dp_plan import plan_privacy


def plan_for(config: TrainConfig) -> Plan:
    """The validated plan for a :class:`TrainConfig` (raises ``ConfigError`` on bad input).

    The global batch must fit in the training examples left after the validation split (one batch per
    epoch at most, with or without DP-SGD); with DP-SGD, the privacy plan counts those examples.
    """
    plan = plan_run(
        model=config.model,
        dataset=config.dataset,
        hparams=dict(config.hparams),
        data_path=config.data_path,
        seed=config.seed,
        download=config.download,
        seq_len=config.seq_len,
        max_examples=config.max_examples,
    )
    examples = len(split_validation(len(plan.dataset.x_train), config.validation_fraction, config.seed)[0])
    if config.batch_size > examples:  # the same bound DP-SGD needs for q = batch_size / examples <= 1
        raise ConfigError(
            f"batch_size must be <= the training examples left after the validation split "
            f"(validation_fraction={config.validation_fraction} of {len(plan.dataset.x_train)}); "
            f"got batch_size={config.batch_size} > examples={examples}"
        )
    if config.privacy is None:
        return plan
    private = plan_privacy(config.privacy, examples=examples, batch_size=config.batch_size, epochs=config.epochs)
    return dataclasses.replace(plan, privacy=private)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays; validation is empty when ``fraction`` is 0."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
