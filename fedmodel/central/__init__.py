"""Central training: any zoo model on any dataset, on a `tf.distribute` strategy, with mixed precision.

Import :mod:`fedmodel.central.trainer` to train (it imports TensorFlow); this package's ``__init__`` does not.
"""

from fedmodel.central.config import TrainConfig

__all__ = ["TrainConfig"]
