"""A run's first step: everything train() needs before the first epoch, in the order it needs it."""

from dataclasses import dataclass
from typing import Any

import mnistlab.backend  # noqa: F401
from mnistlab.backend import use_disk_cache

import keras
import numpy as np

from mnistlab.data import Dataset, load_dataset, one_hot, shaped
from mnistlab.storage import RunFolder
from mnistlab.training.checkpoint import restore
from mnistlab.training.compile import make_model
from mnistlab.training.config import TrainConfig


@dataclass
class Setup:
    """A run ready to train: its config (resolved), folder, data and model, and where it starts."""

    config: TrainConfig  # resolved; with a time budget, its epochs are the plan once run_epochs made it
    folder: RunFolder | None  # None: a run without a folder
    data: Dataset  # its test set is scored at the end
    model: keras.Model  # compiled; resumed: the checkpoint's weights and optimizer state
    train: tuple[Any, Any]  # (x, y): uint8 pixels shaped as the model takes them, one-hot labels
    validation: tuple[Any, Any]  # the same for the validation set: the test set, or a held-out tail
    held_out: bool  # True: validation is on held-out training images, not the test set
    history: dict  # the epochs a resumed run already trained (else empty)
    initial_epoch: int  # the first epoch to train (0, or the checkpoint's)
    trained_seconds: float = 0.0  # the seconds those epochs took (the checkpoint's)


def prepare(config, folder=None, dataset=None, resume=False):
    """The seed set, the data split, the model built and, resuming, restored from the last checkpoint
    of run folder `folder` (started by train(): config.json written, locked). `config` is resolved
    (TrainConfig.resolved)."""
    use_disk_cache()
    keras.utils.set_random_seed(config.seed)
    data = dataset or load_dataset(config.dataset, config.data_dir, verify=config.verify_data)
    x, y, held_out = split_validation(data.x_train, data.y_train, config)
    val_x, val_y = held_out if held_out else (data.x_test, data.y_test)
    model = make_model(config, len(x))
    history, initial_epoch, seconds = {}, 0, 0.0
    state = folder.latest_checkpoint() if folder and resume else None
    if state:
        restore(model, state, folder)  # the checkpoint's weights and optimizer state
        history, initial_epoch, seconds = state.history, state.epoch, state.seconds
    # uint8 pixels: the fast path scales them batch by batch on the device, Keras' fit (loop.fit) first
    shape = tuple(model.input_shape[1:])
    return Setup(
        config,
        folder,
        data,
        model,
        (shaped(x, shape), one_hot(y)),
        (shaped(val_x, shape), one_hot(val_y)),
        held_out is not None,
        history,
        initial_epoch,
        seconds,
    )


def split_validation(x, y, config):
    """(train x, train y, validation data): the test set, or a held-out tail of the training set."""
    if config.validation_split is None:
        return x, y, None
    n_val = max(1, round(len(x) * config.validation_split))
    order = np.random.default_rng(config.seed).permutation(len(x))
    val, keep = order[:n_val], order[n_val:]
    return x[keep], y[keep], (x[val], y[val])
