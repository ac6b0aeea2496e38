"""One trial of a sampled study: train with its parameters on the head of the training set,
validate on the held-out tail after every epoch, hand each epoch's accuracy to the pruner, and
stop at that epoch's end when the pruner says so.

The same function runs in the command's process (the pruner asks the study itself), in local
worker processes and on Dask workers (the pruner asks a copy of the study as it stood when the
trial started: the trials before it, with their per-epoch accuracies). The accuracies come from
the training loop's own per-epoch logs (a Keras callback), on the compiled fast path and in Keras'
fit alike.

Light at import, as worker.py: a worker process sets its thread limits before Keras loads.
"""

import os
import socket
import time

from mnistlab.search.worker import FIT_LOCK, limit_threads


def run_trial(params, x, y, n_val, pruning=None, threads=None):
    """Train MnistClassifier(**params) on x[:-n_val], validating on x[-n_val:] after every epoch.

    pruning: a function (epoch, accuracy) -> prune now?, or a study snapshot (study.snapshot)
    to build one from, or None. Returns the outcome: state ("complete", "pruned" or "fail"),
    values (validation accuracy per epoch), seconds, worker, error (a failed trial's reason).
    """
    with limit_threads(threads), FIT_LOCK:
        from mnistlab.backend import use_disk_cache

        from mnistlab.errors import UsageError, first_line
        from mnistlab.search.estimator import MnistClassifier
        from mnistlab.training.fastpath import shared_programs

        use_disk_cache()
        report = pruning if callable(pruning) or pruning is None else snapshot_pruning(*pruning)
        watcher = epoch_watcher(report)
        outcome = {"worker": f"{socket.gethostname()}:{os.getpid()}", "values": watcher.values}
        start = time.perf_counter()
        try:
            with shared_programs():  # trials of other widths and dropout rates reuse its compiled programs
                MnistClassifier(**params).fit(
                    x[:-n_val], y[:-n_val], validation_data=(x[-n_val:], y[-n_val:]), callbacks=[watcher]
                )
        except (UsageError, ValueError) as e:  # parameters that cannot train together: this trial fails
            return outcome | {"state": "fail", "error": first_line(e), "seconds": round(time.perf_counter() - start, 3)}
        state = "pruned" if watcher.pruned else "complete"
        return outcome | {"state": state, "seconds": round(time.perf_counter() - start, 3)}


def epoch_watcher(report):
    """A callback recording each epoch's val_accuracy and stopping training when `report` says prune.
    A RunCallback that only looks (training.callbacks): the weights stay those of the last epoch."""
    from mnistlab.training.callbacks import RunCallback

    class EpochWatcher(RunCallback):
        def __init__(self):
            super().__init__()
            self.values, self.pruned = [], False

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {})["val_accuracy"])
            self.values.append(value)
            if report is not None and report(epoch, value):
                self.pruned = True
                # both engines stop at this epoch's end. Keras sets the model before training; its own type
                # says Model | None
                self.model.stop_training = True  # pyright: ignore[reportOptionalMemberAccess]

    return EpochWatcher()


def snapshot_pruning(study_name, pruner, earlier):
    """Prune as the study would, from a copy of it: its trials before this one, in memory."""
    import optuna

    from mnistlab.search.study import quiet_optuna

    quiet_optuna()
    copy = optuna.create_study(
        study_name=study_name, direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    copy.add_trials(earlier)
    trial = copy.ask()  # numbered as the real trial (every earlier trial is in the copy)

    def report(epoch, value):
        trial.report(value, epoch)
        return trial.should_prune()

    return report


def live_pruning(trial):
    """Prune with the study itself: report to the real trial, ask its pruner."""

    def report(epoch, value):
        trial.report(value, epoch)
        return trial.should_prune()

    return report
