"""GPU check: the notebook CNN through mnistlab's fast path on one GPU, timed without compilation.

Run by bench/gpu_check.sh on the GPU machine (which has JAX with CUDA but no
Keras; the shell script installs the carried wheels first). Prints JSON lines:

  1. layouts: one warm epoch of the notebook CNN in each image layout, so the
     rule in fastpath.default_layout() (NHWC + XLA/cuDNN convolutions on GPUs) is checked;
  2. notebook: the notebook CNN, 10 epochs, batch 64, Adam, validation on the test set
     each epoch: training wall time per epoch and in all, compilation excluded
     (a 1-epoch fit of the same shapes compiles first; later fits reuse its programs);
  3. time_to_99: for a few batch sizes and learning rates, the training time (compilation
     and the per-epoch test evaluation excluded) until test accuracy first reaches 0.99.
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import keras

from mnistlab.data import for_input, load_dataset, one_hot
from mnistlab.models import build_model
from mnistlab.training import fastpath
from mnistlab.training.config import TrainConfig
from mnistlab.training.loop import compile_model


class EpochClock(keras.callbacks.Callback):
    """Per-epoch wall time; fastpath.fit reads each epoch's metrics before on_epoch_end, so the
    device has finished the epoch (training and the test evaluation) when this runs."""

    def __init__(self):
        super().__init__()
        self.times, self.val = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)
        self.val.append(logs.get("val_accuracy"))


def model_for(config):
    keras.utils.set_random_seed(config.seed)
    return compile_model(build_model(config.model), config)


def fit(config, data, epochs, layout=None, validate=True):
    model = model_for(config)
    shape = model.input_shape[1:]
    x, y = for_input(data.x_train, shape), one_hot(data.y_train)
    val = (for_input(data.x_test, shape), one_hot(data.y_test)) if validate else None
    clock = EpochClock()
    start = time.perf_counter()
    history = fastpath.fit(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=config.batch_size,
        validation_data=val,
        seed=config.seed,
        verbose=0,
        callbacks=[clock],
        layout=layout,
    )
    return time.perf_counter() - start, clock, history


def emit(**record):
    print(json.dumps(record), flush=True)


def eval_seconds(config, data, layout=None):
    """Wall time of one test-set evaluation (compiled already): subtracted from epoch times."""
    model = model_for(config)
    engine = fastpath.engine_for(model, config.batch_size, layout)
    params = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    vx = jax.numpy.asarray(for_input(data.x_test, model.input_shape[1:]))
    vy = jax.numpy.asarray(one_hot(data.y_test))
    jax.block_until_ready(engine.evaluate(params, state, vx, vy))
    start = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(engine.evaluate(params, state, vx, vy))
    return (time.perf_counter() - start) / 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder holding mnist/")
    ap.add_argument("--skip", nargs="*", default=[], choices=["layouts", "notebook", "time_to_99"])
    a = ap.parse_args()
    data = load_dataset("mnist", a.data)
    emit(
        devices=[str(d) for d in jax.devices()],
        jax=jax.__version__,
        keras=keras.__version__,
        default_layout=fastpath.default_layout(),
    )
    notebook = TrainConfig(model="cnn", epochs=10, batch_size=64, optimizer="Adam")

    if "layouts" not in a.skip:
        for layout in ("nhwc", "chwn"):
            fit(notebook, data, 1, layout, validate=False)  # compiles
            _, clock, _ = fit(notebook, data, 1, layout, validate=False)
            emit(check="layouts", layout=layout, epoch_s=round(clock.times[0], 3))

    if "notebook" not in a.skip:
        fit(notebook, data, 1)  # compiles the training and evaluation programs
        _, clock, history = fit(notebook, data, 10)
        emit(
            check="notebook",
            epochs=10,
            batch_size=64,
            train_wall_s=round(sum(clock.times), 3),
            epoch_s=[round(t, 3) for t in clock.times],
            test_accuracy=history["val_accuracy"][-1],
            note="per-epoch times include the test evaluation each epoch, as the notebook does",
        )

    if "time_to_99" not in a.skip:
        for batch, lr in ((64, 1e-3), (128, 2e-3), (256, 3e-3), (512, 4e-3)):
            config = TrainConfig(model="cnn", batch_size=batch, lr=lr, optimizer="Adam")
            fit(config, data, 1)  # compiles
            per_eval = eval_seconds(config, data)
            _, clock, history = fit(config, data, 8)
            reached = next((i for i, v in enumerate(clock.val) if v >= 0.99), None)
            train_s = None if reached is None else sum(clock.times[: reached + 1]) - per_eval * (reached + 1)
            emit(
                check="time_to_99",
                batch_size=batch,
                lr=lr,
                epochs_to_99=None if reached is None else reached + 1,
                train_s_to_99=None if train_s is None else round(train_s, 3),
                val_accuracy=[round(v, 4) for v in clock.val],
                eval_s=round(per_eval, 4),
            )


if __name__ == "__main__":
    main()
