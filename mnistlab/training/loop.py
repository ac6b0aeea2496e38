"""Step 3 of the pipeline: compile and train a model as the notebook does
(minibatches, shuffling, validation every epoch) and write the run folder."""
import time
from dataclasses import dataclass

import mnistlab.backend  # noqa: F401
import keras
import numpy as np

from mnistlab.data import for_input, load_dataset, one_hot
from mnistlab.evaluation import EVAL_BATCH, evaluate
from mnistlab.models import build_model
from mnistlab.optimizers import make_optimizer
from mnistlab.training.config import TrainConfig


@dataclass
class Run:
    """What one training run produced."""
    config: TrainConfig
    model: keras.Model
    history: dict
    metrics: dict
    out: str | None


def compile_model(model, config):
    model.compile(loss=config.loss,
                  optimizer=make_optimizer(config.optimizer, config.lr, config.optimizer_defaults),
                  metrics=["accuracy"])
    return model


def split_validation(x, y, config):
    """(train x, train y, validation data): the test set, or a held-out tail of the training set."""
    if config.validation_split is None:
        return x, y, None
    n_val = max(1, int(round(len(x) * config.validation_split)))
    order = np.random.default_rng(config.seed).permutation(len(x))
    val, keep = order[:n_val], order[n_val:]
    return x[keep], y[keep], (x[val], y[val])


def fit(model, x, y, validation_data, config, verbose=1, callbacks=()):
    """Train a compiled model on preprocessed arrays; returns the per-epoch history dict."""
    result = model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs,
                       validation_data=validation_data, validation_batch_size=EVAL_BATCH,
                       shuffle=config.shuffle, verbose=verbose, callbacks=list(callbacks))
    return {k: [float(v) for v in vals] for k, vals in result.history.items()}


def train(config=None, out=None, verbose=1, dataset=None, callbacks=(), **overrides):
    """Train a model as `config` (a TrainConfig, or keyword overrides) says.

    Writes the run folder when `out` is given and returns a Run.
    """
    config = config or TrainConfig(**overrides)
    keras.utils.set_random_seed(config.seed)
    data = dataset or load_dataset(config.dataset, config.data_dir)
    model = compile_model(build_model(config.model, hidden=config.hidden, dropout=config.dropout), config)
    shape = tuple(model.input_shape[1:])
    x, y, held_out = split_validation(data.x_train, data.y_train, config)
    val_x, val_y = held_out if held_out else (data.x_test, data.y_test)
    start = time.perf_counter()
    history = fit(model, for_input(x, shape), one_hot(y), (for_input(val_x, shape), one_hot(val_y)),
                  config, verbose=verbose, callbacks=callbacks)
    train_seconds = time.perf_counter() - start
    metrics = evaluate(model, data.x_test, data.y_test)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["epochs"] = len(history.get("loss", []))
    run = Run(config, model, history, metrics, out)
    if out:
        from mnistlab.training.run_dir import write_run
        write_run(run)
    return run
