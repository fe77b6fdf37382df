"""Checks a training request against the zoo and the data before anything runs or is written.

Everything here is TensorFlow-free, so bad input is rejected in well under a second and no
run directory is created for it.
"""

from __future__ import annotations

import dataclasses

from fedmodel import zoo
from fedmodel.central.config import TrainConfig
from fedmodel.data import Dataset, load_dataset
from fedmodel.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Plan:
    """A validated pairing of a zoo model and a loaded dataset."""

    spec: zoo.ModelSpec
    dataset: Dataset
    num_params: int


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
    """The validated plan for a :class:`TrainConfig` (raises ``ConfigError`` on bad input)."""
    return plan_run(
        model=config.model,
        dataset=config.dataset,
        hparams=dict(config.hparams),
        data_path=config.data_path,
        seed=config.seed,
        download=config.download,
        seq_len=config.seq_len,
        max_examples=config.max_examples,
    )
