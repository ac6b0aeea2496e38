"""What train() calls besides its own work: the one protocol for hooks at each epoch's end and at the run's end.

train() takes Keras callbacks. Those that subclass RunCallback declare what they do:

    changes_weights            False (the default): it only looks at the run (a logger, a target that
                               stops it). Then the last epoch's validation measured the final weights,
                               and train() takes it as the test score when it ran on the test set.
                               True: it may change the weights after that (restore the best ones).
    on_epoch_end(epoch, logs)  Keras' own: each epoch's loss, accuracy, val_loss, val_accuracy. An
                               exception raised here stops the run and leaves train() at once, on
                               either engine, the checkpoint of the epoch before complete: a tuner
                               prunes a trial so.
    on_run_end(run)            the run finished: its Run, test score included, its folder written.
    on_run_failed(error)       the run stopped with `error` (an exception, Ctrl-C's too) before its
                               end: close what was opened, mark the run failed. A caller that wraps
                               more work than train() (the command line, reading the data meanwhile)
                               may call it again for the same run: a second call must do nothing.

A plain keras.callbacks.Callback works as in Keras' fit; train() counts it as one that may change the
weights and calls no run hook of it.
"""

import contextlib

import mnistlab.backend  # noqa: F401

import keras


class RunCallback(keras.callbacks.Callback):
    """A Keras callback that also hears how the run ended; by default it only looks."""

    changes_weights = False  # True: it may change the weights after the last epoch's validation

    def on_run_end(self, run):
        """The run finished: `run` is train()'s Run (config, model, history, metrics, out)."""

    def on_run_failed(self, error):
        """The run stopped with `error` before its end; may be called twice for one run."""


def may_change_weights(callbacks):
    """True when one of `callbacks` may change the weights after the last validation."""
    return any(not isinstance(c, RunCallback) or c.changes_weights for c in callbacks)


def run_ended(callbacks, run):
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.on_run_end(run)


def run_failed(callbacks, error):
    """Tell each RunCallback that the run failed. Their own errors are dropped: the error that stopped
    the run is the one to report."""
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            with contextlib.suppress(Exception):
                callback.on_run_failed(error)
