"""Per-epoch times of the fast path alone: training (938 steps) and validation, in one process.

No imports, data loading or run folder in the figures: this is the tool for comparing two
versions of the compiled step (run it on each, interleaved). The first epoch includes
fetching the compiled programs.

  MNISTLAB_DATA=../shared/data .venv/bin/python bench/epochs.py --model cnn --epochs 4
"""

import argparse
import time

from mnistlab.backend import use_disk_cache

import jax
import jax.numpy as jnp
import keras
import numpy as np

from mnistlab.data import for_input, load_dataset, one_hot
from mnistlab.models import build_model
from mnistlab.training import fastpath
from mnistlab.training.config import TrainConfig
from mnistlab.training.loop import compile_model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dnn")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    use_disk_cache()  # as `mnistlab train` does: the compiled programs are fetched, not rebuilt
    keras.utils.set_random_seed(0)
    data = load_dataset("mnist")
    model = compile_model(build_model(a.model), TrainConfig(model=a.model))
    shape = tuple(model.input_shape[1:])
    x, y = jax.device_put(for_input(data.x_train, shape)), jax.device_put(one_hot(data.y_train))
    vx, vy = jax.device_put(for_input(data.x_test, shape)), jax.device_put(one_hot(data.y_test))
    model.optimizer.build(model.trainable_variables)
    engine = fastpath.engine_for(model, a.batch_size)
    params = [v.value for v in model.trainable_variables]
    opt_vars = [v.value for v in model.optimizer.variables]
    state = [v.value for v in model.non_trainable_variables]
    n = len(data.x_train)
    steps = -(-n // a.batch_size)
    for epoch in range(a.epochs):
        order, key = fastpath.epoch_plan(0, epoch, n, a.batch_size, True)
        start = time.perf_counter()
        params, opt_vars, state, sums = engine.train(
            params, opt_vars, state, jnp.zeros(2), x, y, jnp.asarray(order), key, np.int32(0), np.int32(steps)
        )
        jax.block_until_ready(sums)
        trained = time.perf_counter()
        _loss, acc = jax.block_until_ready(engine.evaluate(params, state, vx, vy))
        print(
            f"{a.model} epoch {epoch + 1}: train {trained - start:.3f} s, validation "
            f"{time.perf_counter() - trained:.3f} s, val_accuracy {float(acc):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
