"""Step 3 of the pipeline: train a model as the notebook does (minibatches, shuffling, validation
every epoch) and write the run folder.

train() tells the story in three steps: prepare (prepare.py: config, folder, seed, data, model,
resume), the epochs (run_epochs: fit() on the engine that can train the model, with the run's own
hooks) and finish (finish.py: the figures, the run folder); an ensemble (--members N) is N such runs
(ensemble.py). The caller's callbacks hear each epoch's end (an ensemble's members' one after
another) and the run's end or failure (callbacks.RunCallback).
"""

import contextlib
import time
from dataclasses import dataclass, replace

import mnistlab.backend  # noqa: F401

from mnistlab.data import scale_pixels
from mnistlab.data.registry import DATASETS
from mnistlab.errors import UsageError
from mnistlab.storage import RunFolder
from mnistlab.system import EVAL_BATCH
from mnistlab.training import budget, checkpoint, fastpath
from mnistlab.training.augmented import AugmentedBatches, transformed
from mnistlab.training.budget import Plan
from mnistlab.training.callbacks import RunCallback, may_change_weights, run_ended, run_failed
from mnistlab.training.compile import compile_model, make_model  # noqa: F401  (callers' names: loop.make_model...)
from mnistlab.training.config import TrainConfig
from mnistlab.training.ensemble import train_ensemble
from mnistlab.training.fastpath.progress import keras_bar_fits, progress_logger
from mnistlab.training.finish import Run, measure, record
from mnistlab.training.precise_bn import PreciseBatchNorm, batch_norm_layers
from mnistlab.training.prepare import prepare
from mnistlab.training.target import TargetAccuracy

EPOCHS_BESIDE_BUDGET = "give --epochs or --time-budget, not both: a time budget chooses the epochs"


@dataclass
class Trained:
    """What the epochs gave: the whole history (a resumed run's earlier epochs first), the seconds they
    took (validation included; a resumed run's earlier epochs too) and, with a target accuracy, the
    seconds until it was reached (or None)."""

    history: dict
    seconds: float
    time_to_target: float | None = None
    plan: Plan | None = None  # with a time budget: the plan made now (a resumed run's was made before)


def train(config=None, out=None, verbose=1, dataset=None, callbacks=(), resume=False, **overrides):
    """Train a model as `config` (a TrainConfig, and/or keyword overrides) says.

    With `out`, writes the run folder (config.json first, a checkpoint every epoch, the rest at the
    end), locked against other writers until the run ends (storage.folder); with `resume`,
    continues from the folder's last checkpoint.
    `dataset`: a loaded data.Dataset to train on instead of loading config.dataset; the run records
    its name (one of the registered datasets, else config.dataset).
    `callbacks`: Keras callbacks; those that are training.callbacks.RunCallback also hear
    the run's end (on_run_end) or its failure (on_run_failed), and may declare that they only look.
    """
    callbacks = list(callbacks)  # read several times: for their declarations, the epochs, the end
    try:
        if overrides.get("time_budget") is not None and "epochs" in overrides:
            raise UsageError(EPOCHS_BESIDE_BUDGET)
        config = (replace(config, **overrides) if config else TrainConfig(**overrides)).resolved()
        if dataset is not None and dataset.name in DATASETS and dataset.name != config.dataset:
            # config.json names the images trained on, which report, evaluate and resume load again
            config = replace(config, dataset=dataset.name)
        folder = RunFolder(out) if out else None
        # config.json written, the folder locked against other writers until the run ends, however it ends
        with folder.start(config.to_dict()) if folder else contextlib.nullcontext():
            if config.members > 1:
                run = train_ensemble(config, folder, dataset, verbose, resume, train, callbacks)
            else:
                setup = prepare(config, folder, dataset, resume)
                trained = run_epochs(setup, callbacks, verbose)
                metrics = measure(setup, trained, validated_final_weights=not may_change_weights(callbacks))
                run = Run(setup.config, setup.model, trained.history, metrics, out)  # with a budget, its plan
            if folder:
                record(folder, run)
        run_ended(callbacks, run)  # trackers (training.tracking) record the test score too
        return run
    except BaseException as error:  # Ctrl-C too: a tracker marks its run failed rather than running
        run_failed(callbacks, error)
        raise


def run_epochs(setup, callbacks, verbose=1):
    """The epochs from setup.initial_epoch to config.epochs through fit(), the caller's callbacks first,
    then the run's own: the checkpoint writer (with a folder), the target accuracy's stop and, with a
    time budget, its guard. A budget's plan (budget.py) comes first and sets setup.config's epochs; a
    resumed run keeps the plan its config.json holds; a run without a schedule may add epochs at the
    end (budget.more_epochs), recorded in config.json. The seconds counted include the plan's probe and
    a resumed run's earlier epochs (so the ensemble's members after it get their share of what is left)."""
    start = time.perf_counter() - setup.trained_seconds
    plan = budget.plan(setup, fit, start) if setup.config.time_budget and not setup.initial_epoch else None
    if plan and plan.short and verbose:
        print(
            f"the time budget ({plan.budget:.3g} s) holds less than one epoch of this run here "
            f"(after {plan.probe_seconds:.0f} s of timing it): it trains one epoch on the first "
            f"{plan.train_samples:,} of the {plan.n_train:,} training images"
        )
    target = TargetAccuracy(setup.config.target_accuracy, start) if setup.config.target_accuracy else None
    guard = budget.BudgetGuard(plan, start) if plan else None
    hooks = [hook for hook in (target, guard) if hook]
    history, epoch = setup.history, setup.initial_epoch
    while epoch < setup.config.epochs:
        replan = budget.next_replan(plan, setup.config, epoch)
        until = replan or setup.config.epochs
        new, round_ = fit_epochs(setup, history, epoch, until, callbacks, hooks, verbose, start)
        history = {k: list(history.get(k, [])) + v for k, v in new.items()}
        epoch += len(next(iter(new.values()), []))
        if epoch < until:  # stopped early: by the guard, the target, a callback
            break
        if replan:
            budget.replan(setup, plan, guard)
        elif more := budget.more_epochs(plan, guard, setup.config, stopped=setup.model.stop_training):
            setup.config = replace(setup.config, epochs=epoch + more)
            if setup.folder:
                setup.folder.write_config(setup.config.to_dict())
        if epoch < setup.config.epochs and setup.model.optimizer.use_ema:
            round_.restore(setup.model)  # training goes on from the weights it trained, not their average
    return Trained(history, time.perf_counter() - start, target.seconds if target else None, plan)


class Round(RunCallback):
    """fit() as one round of a run's epochs: it stops after epoch `until` if that comes before the
    run's last (the schedule spanning them all), and keeps the trainable weights of the last epoch's
    end, before fit() ends. (A fit with a moving average of the weights, use_ema, ends by setting them
    to the average, which the next round must not train from.)"""

    def __init__(self, until):
        super().__init__()
        self.until, self.values = until, []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        assert model is not None
        self.values = [v.value for v in model.trainable_variables]
        if self.until is not None and epoch + 1 >= self.until:
            model.stop_training = True

    def restore(self, model):
        for variable, value in zip(model.trainable_variables, self.values):
            variable.assign(value)


def fit_epochs(setup, history, initial_epoch, until, callbacks, hooks, verbose, start):
    """fit() from `initial_epoch` to `until`: the caller's `callbacks`, a checkpoint writer of its own
    (with a folder; `history`: the epochs before; `start`: the run's perf_counter start, its earlier
    seconds before it), then the run's `hooks`. Returns the new epochs' history and their Round."""
    clock = lambda: time.perf_counter() - start  # noqa: E731
    saver = checkpoint.Checkpoint(setup.folder, history, clock) if setup.folder else None
    round_ = Round(until if until < setup.config.epochs else None)
    x, y = setup.train
    try:
        new = fit(
            setup.model,
            x,
            y,
            setup.validation,
            setup.config,
            verbose=verbose,
            callbacks=[*callbacks, *([saver] if saver else []), *hooks, round_],
            initial_epoch=initial_epoch,
        )
        return new, round_
    except BaseException:
        if saver:  # an error or Ctrl-C mid-run: the last epoch's checkpoint is complete before it spreads
            with contextlib.suppress(Exception):  # (the error that stopped the run is the one to report)
                saver.close()
        raise


def fit(model, x, y, validation_data, config, verbose=1, callbacks=(), initial_epoch=0, precise_batch_norm=True):
    """Train a compiled model from `initial_epoch` to config.epochs on inputs shaped as it takes them
    (float32, or uint8 pixels: scaled as data.scale does); returns the history of the epochs it ran.
    precise_batch_norm: batch norm's statistics recomputed for each validation and the end (precise_bn).

    The fast path (whole epochs as compiled programs) trains what it can train exactly as Keras'
    fit would (fastpath.check); anything else goes through Keras' own fit.
    """
    config = config.resolved()
    transform = transformed(config)
    if precise_batch_norm and batch_norm_layers(model):  # its statistics measured for the weights it is scored with
        callbacks = [*callbacks, PreciseBatchNorm(x, config.batch_size, config.seed, transform)]
    if config.engine != "keras":
        epoch_inputs = (lambda epoch: transform(x, epoch)) if transform else None
        try:
            return fastpath.fit(
                model,
                x,
                y,
                epochs=config.epochs,
                batch_size=config.batch_size,
                validation_data=validation_data,
                shuffle=config.shuffle,
                seed=config.seed,
                verbose=verbose,
                callbacks=callbacks,
                initial_epoch=initial_epoch,
                epoch_inputs=epoch_inputs,
            )
        except fastpath.Unsupported as e:  # raised before any training: fall back to Keras' fit
            if config.engine == "fast":
                raise UsageError(f"--engine fast cannot train this model: {e.reason}") from None
    if verbose and not keras_bar_fits():  # Keras' bar draws with escape codes: a notebook's or a log's instead
        callbacks, verbose = [*callbacks, progress_logger(verbose)], 0
    if transform:  # batches transformed as they are drawn (data.augment)
        data = {"x": AugmentedBatches(x, y, config, initial_epoch)}
    else:
        data = {"x": scale_pixels(x), "y": y, "batch_size": config.batch_size, "shuffle": config.shuffle}
    if validation_data is not None:
        validation_data = (scale_pixels(validation_data[0]), validation_data[1])
    result = model.fit(
        **data,
        epochs=config.epochs,
        validation_data=validation_data,
        validation_batch_size=EVAL_BATCH,
        verbose=verbose,
        callbacks=list(callbacks),
        initial_epoch=initial_epoch,
    )
    return {k: [float(v) for v in vals] for k, vals in result.history.items()}
