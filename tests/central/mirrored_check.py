"""Run as a script (a fresh process, so the CPU can still be split into logical devices).

Trains the same model from the same seed on the same global batches twice: once on the default
strategy (one device) and once under MirroredStrategy over two logical CPU devices. Prints JSON
with the largest absolute weight difference and both losses.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tensorflow as tf

from fedmodel.central import optim
from fedmodel.central.config import TrainConfig
from fedmodel.central.plan import plan_for
from fedmodel.central.strategy import make_strategy, split_cpu
from fedmodel.central.trainer import build_compiled_model, make_dataset


def run(strategy_name: str, model: str) -> tuple[list[np.ndarray], list[float], int]:
    config = TrainConfig(model=model, dataset="synthetic", optimizer="sgd", learning_rate=0.05, batch_size=64, seed=3)
    plan = plan_for(config)
    x, y = plan.dataset.x_train[:512], plan.dataset.y_train[:512]  # 8 global batches of 64, no remainder
    tf.keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy if strategy_name == "default" else "mirrored", logical_devices=2)
    steps = optim.steps_per_epoch(len(x), config.batch_size)
    net = build_compiled_model(config, plan, strategy=strategy, steps_per_epoch=steps)
    data = make_dataset(x, y, batch_size=config.batch_size, seed=config.seed, shuffle=True)
    history = net.fit(data, epochs=3, verbose=0)
    return [w.copy() for w in net.get_weights()], history.history["loss"], strategy.num_replicas_in_sync


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "mlp"
    split_cpu(2)
    tf.config.experimental.enable_op_determinism()
    w1, loss1, r1 = run("default", model)
    w2, loss2, r2 = run("mirrored", model)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2, strict=True))
    scale = max(float(np.max(np.abs(a))) for a in w1)
    print(json.dumps({"replicas": [r1, r2], "max_abs_diff": diff, "weight_scale": scale, "loss": [loss1, loss2]}))


if __name__ == "__main__":
    main()
