"""Per-epoch checkpoints, so a killed run resumes from its last finished epoch.

Each epoch writes a new model file (weights and optimizer state) and only then
a small state.json naming it; the older file is removed last. A kill at any
moment therefore leaves state.json pointing at a complete checkpoint.
Random state needs no saving: the fast path derives shuffling and dropout
from (seed, epoch), so epoch k+1 after a resume is the epoch k+1 of an
uninterrupted run.
"""
import json
import os
from dataclasses import dataclass

import keras

from mnistlab.atomic import write_json
from mnistlab.errors import MnistlabError
from mnistlab.training.run_dir import save_model

FOLDER = "checkpoint"
STATE = "state.json"


@dataclass
class State:
    epoch: int        # epochs finished
    model_path: str
    history: dict


class Checkpoint(keras.callbacks.Callback):
    """Saves the model, optimizer state and history at the end of every epoch."""

    def __init__(self, out, history=None):
        super().__init__()
        self.folder = os.path.join(out, FOLDER)
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        save(self.folder, self.model, epoch + 1, self.history)


def save(folder, model, epoch, history):
    os.makedirs(folder, exist_ok=True)
    name = f"epoch-{epoch:04d}.keras"
    save_model(model, os.path.join(folder, name))
    write_json(os.path.join(folder, STATE), {"epoch": epoch, "model": name, "history": history})
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
        model_path = os.path.join(out, FOLDER, state["model"])
        if not os.path.isfile(model_path):
            raise KeyError(state["model"])
        return State(int(state["epoch"]), model_path, state["history"])
    except (ValueError, KeyError, TypeError) as e:
        raise MnistlabError(f"{path}: damaged checkpoint ({e}); delete {os.path.join(out, FOLDER)} "
                            "to start the run again") from None


def remove(out):
    folder = os.path.join(out, FOLDER)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
