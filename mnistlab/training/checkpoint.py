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
training, or an error or interrupt out of it, waits for the last, so files
appear in order, a run resumed in the same process finds the last checkpoint
whole, and an error (a full disk: "cannot write run folder DIR: ...") surfaces
in the training process. The checkpoint's files (checkpoint/state.json and
epoch-NNNN.npz) and their writing belong to mnistlab.storage.RunFolder; this
module is the Keras side: which arrays, taken when, put back how.
Random state needs no saving: the fast path derives shuffling and dropout
from (seed, epoch), so epoch k+1 after a resume is the epoch k+1 of an
uninterrupted run.
"""

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np


def variables(model):
    """What a checkpoint holds, in a fixed order: the model's weights, then its optimizer's variables."""
    return list(model.weights) + list(model.optimizer.variables)


def snapshot(model):
    """Host copies of what a checkpoint holds (variables' order), safe to write while training goes on."""
    return [np.array(v.value, copy=True) for v in variables(model)]


class Checkpoint(keras.callbacks.Callback):
    """Saves the weights, optimizer state and history at the end of every epoch."""

    def __init__(self, run, history=None, clock=None):
        """`run`: the storage.RunFolder the checkpoints go to; `history`: the epochs before this fit's;
        `clock`: the run's training seconds so far (a resumed run's before it included), recorded with
        each epoch so that the run resumed from it counts them too."""
        super().__init__()
        self.run, self.clock = run, clock
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending = None

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        seconds = round(self.clock(), 3) if self.clock else 0.0
        self.wait()
        values = snapshot(self.model)
        history = {k: list(v) for k, v in self.history.items()}
        self.pending = self.writer.submit(self.run.save_checkpoint, values, epoch + 1, history, seconds)

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        """Finish the pending write (Keras calls on_train_end only when training ends normally)."""
        try:
            self.wait()
        finally:
            self.writer.shutdown()

    def wait(self):
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()  # re-raises the writer's error here


def restore(model, state, run):
    """Load checkpoint `state` of RunFolder `run` into a compiled model built from the same config."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    targets = variables(model)
    values = run.load_checkpoint(state)
    if [v.shape for v in values] != [tuple(t.shape) for t in targets]:
        raise run.damaged_checkpoint("its arrays do not fit the model in config.json")
    for target, value in zip(targets, values):
        target.assign(value)
