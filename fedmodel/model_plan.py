"""A zoo model checked against a loaded dataset, before anything runs or is written.

TensorFlow-free and shared by central training (:mod:`fedmodel.central.plan`) and federated runs
(:func:`fedmodel.federated.simulate.preflight`), so bad input is rejected in well under a second.
"""

from __future__ import annotations

import dataclasses

from fedmodel import zoo
from fedmodel.data import Dataset, load_dataset
from fedmodel.errors import ConfigError
from fedmodel.privacy.dp_plan import PrivatePlan


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
