"""Checks a training request against the zoo and the data before anything runs or is written.

Everything here is TensorFlow-free, so bad input is rejected in well under a second and no
run directory is created for it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedmodel import zoo
from fedmodel.central.config import TrainConfig
from fedmodel.data import Dataset, load_dataset
from fedmodel.errors import ConfigError
from fedmodel.privacy.dp_plan import PrivatePlan, plan_privacy


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated pairing of a zoo model and a loaded dataset."""

    spec: zoo.ModelSpec
    dataset: Dataset
    num_params: int
    privacy: PrivatePlan | None = None


def plan_run(
    *,
    model: str,
    dataset: str,
    hparams: dict[str, object] | None = None,
    data_path: str | None = None,
    seed: int = 0,
    download: bool = False,
    seq_len: int = 80,
    max_examples: int | None = None,
) -> Plan:
    """Load the dataset and check that ``model`` can take it; raise ``ConfigError`` otherwise."""
    spec = zoo.get_spec(model)
    data = load_dataset(
        dataset, path=data_path, seed=seed, download=download, seq_len=seq_len, max_examples=max_examples
    )
    if spec.task != data.info.task:
        raise ConfigError(
            f"model {model!r} is for {spec.task} but dataset {data.info.name!r} is {data.info.task}; "
            f"pick a {data.info.task} model (see `fedmodel zoo`)"
        )
    spec.validate_input_shape(data.info.input_shape)
    params = zoo.count_params(
        model, input_shape=data.info.input_shape, num_classes=data.info.num_classes, **dict(hparams or {})
    )
    return Plan(spec=spec, dataset=data, num_params=params)


def plan_for(config: TrainConfig) -> Plan:
    """The validated plan for a :class:`TrainConfig` (raises ``ConfigError`` on bad input).

    With DP-SGD, the privacy plan counts the training examples left after the validation split.
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
    if config.privacy is None:
        return plan
    examples = len(split_validation(len(plan.dataset.x_train), config.validation_fraction, config.seed)[0])
    private = plan_privacy(config.privacy, examples=examples, batch_size=config.batch_size, epochs=config.epochs)
    return dataclasses.replace(plan, privacy=private)


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index arrays; validation is empty when ``fraction`` is 0."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
