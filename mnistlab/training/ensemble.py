"""An ensemble run (--members N): N networks trained one after another, their predicted
probabilities averaged by one Keras model, the run's model.keras (stock Keras loads it).

Each member is a run of its own, in the run folder's members/<i>/ (config.json, checkpoints,
model.keras, metrics.json), so a killed ensemble resumes at the member it was training and keeps
those it had finished. Member i of a run with seed S is the run of seed S x N + i (on its share
of a budget), so runs of neighbouring seeds share no member (and one member is a run of one
network). With a time
budget each member has an equal share of what the members before it left (a member ends short of
its share by up to an epoch, which the next one gets; on a 2-core Zen 3, epochs of ~35 s left 27-81 s
of the best preset's 600 unused): the best preset's convnet scores alone after 15 epochs what
it scores after 30, so on MNIST two half-length networks beat one full-length one (BENCHMARKS.md).
The test-time copies (--tta) score the ensemble, not the members.
"""

from dataclasses import replace

import mnistlab.backend  # noqa: F401

import keras

from mnistlab.data import load_dataset
from mnistlab.inference import evaluate
from mnistlab.training.callbacks import RunCallback
from mnistlab.training.compile import make_loss
from mnistlab.training.config import TrainConfig
from mnistlab.training.finish import Run, copies_score


def member_config(config, index, spent=0.0):
    """Member `index`'s config: its own seed and its share of the time budget, less the `spent`
    training seconds of the members before it, scored plainly."""
    # positive even should the members before have overrun theirs: the member still trains an epoch
    budget = max(config.time_budget - spent, 1.0) / (config.members - index) if config.time_budget else None
    return replace(config, members=1, seed=config.seed * config.members + index, time_budget=budget, tta=0)


def train_ensemble(config, folder, dataset, verbose, resume, train, callbacks=()):
    """The ensemble's Run: its members trained (train_members), averaged, and scored."""
    data = dataset or load_dataset(config.dataset, config.data_dir, verify=config.verify_data)
    runs = train_members(config, folder, data, verbose, resume, train, callbacks)
    model = averaged([run.model for run in runs], make_loss(config.loss, config.label_smoothing))
    epochs = [run.metrics["epochs"] for run in runs]
    metrics = evaluate(model, data.x_test, data.y_test) | {
        "member_seeds": [run.config.seed for run in runs],
        "member_test_accuracy": [run.metrics["test_accuracy"] for run in runs],
        "member_epochs": epochs,
    }
    metrics |= copies_score(model, data, config)
    metrics["train_seconds"] = round(sum(run.metrics["train_seconds"] for run in runs), 3)
    metrics["epochs"] = sum(epochs)
    if config.time_budget:  # each member's plan is in its own config.json
        metrics |= {"time_budget_s": config.time_budget, "planned_epochs": sum(run.config.epochs for run in runs)}
    history = {k: [v for run in runs for v in run.history[k]] for k in runs[0].history}  # one member after another
    return Run(config, model, history, metrics, folder.path if folder else None)


class MemberEpochs(RunCallback):
    """A caller's callback as one member's run passes it on: the member's epochs numbered on from the
    members' before it (as the ensemble's history joins them), the run's end and failure left to the
    ensemble's (its train() tells them)."""

    def __init__(self, inner, offset):
        super().__init__()
        self.inner, self.offset = inner, offset
        self.changes_weights = not isinstance(inner, RunCallback) or inner.changes_weights

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(self.offset + epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(self.offset + epoch, logs)


def _forwarded(hook):
    return lambda self, *args, **kwargs: getattr(self.inner, hook)(*args, **kwargs)


for _hook in dir(keras.callbacks.Callback):  # the batch, test and predict hooks as they come
    if _hook.startswith("on_") and _hook not in ("on_epoch_begin", "on_epoch_end", "on_run_end", "on_run_failed"):
        setattr(MemberEpochs, _hook, _forwarded(_hook))


def train_members(config, folder, data, verbose, resume, train, callbacks=()):
    """Each member trained by `train` (loop.train) into folder/members/<i> (with a folder), or read
    back from there when a resumed run had finished it, the caller's `callbacks` hearing its epochs
    (MemberEpochs); returns the members' Runs."""
    runs = []
    for index in range(config.members):
        member = member_config(config, index, spent=sum(run.metrics["train_seconds"] for run in runs))
        place = folder.member(index) if folder else None
        if place and resume and place.finished():
            done = TrainConfig.from_folder(place)
            runs.append(Run(done, place.load_model(), place.read_history(), place.read_metrics(), place.path))
            continue
        if place and resume and place.is_run(place.path):
            member = TrainConfig.from_folder(place)  # its plan, as a resumed run keeps
        if verbose:
            print(f"member {index + 1} of {config.members} (seed {member.seed})")
        offset = sum(len(run.history.get("loss", [])) for run in runs)
        passed = [MemberEpochs(callback, offset) for callback in callbacks]
        out = place.path if place else None
        runs.append(train(member, out=out, verbose=verbose, dataset=data, resume=resume, callbacks=passed))
    return runs


def averaged(models, loss):
    """One model whose output is the mean of `models`' outputs (each renamed member_<i>, as a
    Keras model's layers need names of their own), compiled with `loss`, so that stock Keras'
    evaluate scores it as mnistlab does."""
    inputs = keras.Input(shape=models[0].input_shape[1:])
    for index, model in enumerate(models):
        model.name = f"member_{index}"
    outputs = keras.layers.Average()([model(inputs) for model in models])
    ensemble = keras.Model(inputs, outputs, name="ensemble")
    # SGD keeps no slot per weight; built, so that stock Keras loading it finds the variables it saved
    ensemble.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    ensemble.optimizer.build(ensemble.trainable_variables)
    return ensemble
