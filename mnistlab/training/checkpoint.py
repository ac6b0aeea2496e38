"""Per-epoch checkpoints, so a killed run resumes from its last finished epoch.

Each epoch writes a new file of the model's weights and optimizer state and
only then a small state.json naming it; the older file is removed last. A kill
at any moment therefore leaves state.json pointing at a complete checkpoint.
The model itself is rebuilt from the run's config.json on resume, so a
checkpoint holds arrays only (a .npz), not a whole .keras archive.

The writing (12-19 ms for the notebook DNN, most of it fsync) happens on a
background thread while the next epoch trains, from a host copy of the arrays
taken at the epoch's end (Keras' own fit donates, i.e. frees, the device
buffers it is handed). Each save waits for the previous one, and the end of
training waits for the last, so files appear in order and an error (a full
disk) surfaces in the training process.
Random state needs no saving: the fast path derives shuffling and dropout
from (seed, epoch), so epoch k+1 after a resume is the epoch k+1 of an
uninterrupted run.
"""
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numpy as np

from mnistlab.atomic import atomic_path, write_json
from mnistlab.errors import MnistlabError

FOLDER = "checkpoint"
STATE = "state.json"


@dataclass
class State:
    epoch: int        # epochs finished
    path: str         # the .npz of weights and optimizer variables
    history: dict


def variables(model):
    """What a checkpoint holds, in a fixed order: the model's weights, then its optimizer's variables."""
    return list(model.weights) + list(model.optimizer.variables)


class Checkpoint(keras.callbacks.Callback):
    """Saves the weights, optimizer state and history at the end of every epoch."""

    def __init__(self, out, history=None):
        super().__init__()
        self.folder = os.path.join(out, FOLDER)
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending = None

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.wait()
        values = [np.array(v.value, copy=True) for v in variables(self.model)]
        history = {k: list(v) for k, v in self.history.items()}
        self.pending = self.writer.submit(save, self.folder, values, epoch + 1, history)

    def on_train_end(self, logs=None):
        self.wait()
        self.writer.shutdown()

    def wait(self):
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the writer's error here


def save(folder, values, epoch, history):
    os.makedirs(folder, exist_ok=True)
    name = f"epoch-{epoch:04d}.npz"
    with atomic_path(os.path.join(folder, name), suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, *values)
    write_json(os.path.join(folder, STATE), {"epoch": epoch, "file": name, "history": history})
    for old in os.listdir(folder):
        if old.startswith("epoch-") and old != name:
            os.unlink(os.path.join(folder, old))


def latest(out):
    """The last finished epoch's State in run folder `out`, or None when there is none."""
    path = os.path.join(out, FOLDER, STATE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
        file = os.path.join(out, FOLDER, state["file"])
        if not os.path.isfile(file):
            raise KeyError(state["file"])
        return State(int(state["epoch"]), file, state["history"])
    except (ValueError, KeyError, TypeError) as e:
        raise damaged(out, e) from None


def restore(model, state, out):
    """Load a checkpoint's arrays into a compiled model built from the same config."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    targets = variables(model)
    try:
        with np.load(state.path) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise damaged(out, e) from None
    if [v.shape for v in values] != [tuple(t.shape) for t in targets]:
        raise damaged(out, "its arrays do not fit the model in config.json")
    for target, value in zip(targets, values):
        target.assign(value)


def damaged(out, why):
    return MnistlabError(f"{os.path.join(out, FOLDER, STATE)}: damaged checkpoint ({why}); delete "
                         f"{os.path.join(out, FOLDER)} to start the run again")


def remove(out):
    folder = os.path.join(out, FOLDER)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
