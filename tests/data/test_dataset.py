"""Validation of DatasetInfo and Dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedmodel.data import Dataset, DatasetInfo
from fedmodel.errors import ConfigError


def _info(**overrides: object) -> DatasetInfo:
    fields: dict[str, object] = {
        "name": "toy",
        "input_shape": (2, 2, 1),
        "num_classes": 3,
        "task": "classification",
        "source": "test",
    }
    fields.update(overrides)
    return DatasetInfo(**fields)  # type: ignore[arg-type]


def _arrays(n_train: int = 4, n_test: int = 2) -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((n_train, 2, 2, 1), np.float32),
        "y_train": np.arange(n_train, dtype=np.int64) % 3,
        "x_test": np.zeros((n_test, 2, 2, 1), np.float32),
        "y_test": np.arange(n_test, dtype=np.int64) % 3,
    }


def test_valid_dataset_is_frozen_and_counts_examples() -> None:
    ds = Dataset(**_arrays(), info=_info())
    assert (ds.num_train, ds.num_test) == (4, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.info = _info()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": 0}, "num_classes must be >= 1, got 0"),
        ({"task": "regression"}, "task must be one of"),
        ({"input_shape": ()}, "input_shape"),
        ({"class_names": ("a", "b")}, "class_names must have num_classes=3 entries, got 2"),
        ({"vocab": "ab"}, "vocab must have num_classes=3 characters, got 2"),
    ],
)
def test_info_rejects_bad_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _info(**overrides)


def test_dataset_rejects_length_mismatch() -> None:
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:3]
    with pytest.raises(ConfigError, match="x_train has 4 examples but y_train has 3"):
        Dataset(**arrays, info=_info())


def test_dataset_rejects_label_out_of_range() -> None:
    arrays = _arrays()
    arrays["y_test"] = np.array([0, 3])
    with pytest.raises(ConfigError, match=r"y_test values must lie in \[0, 3\), got range \[0, 3\]"):
        Dataset(**arrays, info=_info())


def test_dataset_rejects_shape_mismatch_and_float_labels() -> None:
    arrays = _arrays()
    arrays["x_test"] = np.zeros((2, 3, 3, 1), np.float32)
    with pytest.raises(ConfigError, match="x_test examples must have shape"):
        Dataset(**arrays, info=_info())
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    with pytest.raises(ConfigError, match="must hold integers"):
        Dataset(**arrays, info=_info())


def test_dataset_rejects_groups_of_wrong_length() -> None:
    with pytest.raises(ConfigError, match="groups_train must have one entry per training example"):
        Dataset(**_arrays(), info=_info(), groups_train=np.zeros(3))
