"""Datasets and federated partitions for fedmodel.

Load a dataset by name with :func:`load_dataset`, then split its training examples among clients
with :func:`partition`::

    from fedmodel.data import PartitionConfig, label_distribution, load_dataset, partition

    ds = load_dataset("mnist5k", seed=0)
    parts = partition(PartitionConfig("dirichlet", num_clients=10, alpha=0.5), labels=ds.y_train)
    counts = label_distribution(parts, ds.y_train, ds.info.num_classes)

Importing this package never imports TensorFlow; only ``download=True`` for a Keras dataset does.
"""

from __future__ import annotations

from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.data.keras_datasets import keras_cache_dir
from fedmodel.data.partition import PartitionConfig, partition
from fedmodel.data.registry import available_datasets, describe_datasets, load_dataset
from fedmodel.data.summary import format_label_distribution, label_distribution, plot_label_distribution
from fedmodel.data.synthetic import make_synthetic

__all__ = [
    "Dataset",
    "DatasetInfo",
    "PartitionConfig",
    "available_datasets",
    "describe_datasets",
    "format_label_distribution",
    "keras_cache_dir",
    "label_distribution",
    "load_dataset",
    "make_synthetic",
    "partition",
    "plot_label_distribution",
]
