"""Run as a script: DP-SGD noise under MirroredStrategy over two logical CPUs is added once per global batch.

One SGD step (learning rate 1) on a batch whose examples are all masked out moves every weight by
``-noise / expected_batch``. Prints JSON with the measured std of those moves, the std noise-once predicts,
the number of replicas, and whether the wrapper's noise generator (made in the strategy's scope) is the
secure default.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from fedmodel import zoo
from fedmodel.central.strategy import make_strategy, split_cpu
from fedmodel.privacy.engine.dpsgd import DPSGDConfig, DPSGDModel
from fedmodel.privacy.mechanism import GaussianMechanism


def main() -> None:
    split_cpu(2)
    strategy = make_strategy("mirrored", logical_devices=2)
    mechanism = GaussianMechanism(noise_multiplier=2.0, clip=1.0)
    dp = DPSGDConfig(expected_batch_size=64.0)
    with strategy.scope():
        model = zoo.build_model("mlp", input_shape=(8, 8, 1), num_classes=10, seed=0, hidden=(256, 256))
        wrapped = DPSGDModel(model, mechanism=mechanism, dp=dp)
        wrapped.compile(
            optimizer=tf.keras.optimizers.SGD(1.0),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    data = tf.data.Dataset.from_tensors((x, y, np.zeros(64, np.float32)))
    wrapped.fit(data, epochs=1, verbose=0)
    moves = np.concatenate([(a - b).ravel() for a, b in zip(model.get_weights(), before, strict=True)])
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "count": int(moves.size),
                "std": float(moves.std()),
                "expected_std": mechanism.stddev / dp.expected_batch_size,
                "secure": wrapped.secure_noise,
            }
        )
    )


if __name__ == "__main__":
    main()
