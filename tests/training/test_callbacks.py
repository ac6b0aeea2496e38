"""The run callbacks' protocol (training.callbacks.RunCallback): what train() calls at each epoch's end,
at the run's end and when the run fails; an exception raised in a callback stops the run at once, on
either engine, and reaches the caller."""

import threading

import keras
import pytest

from mnistlab import TrainConfig, train
from mnistlab.data import Dataset
from mnistlab.errors import UsageError
from mnistlab.training.callbacks import RunCallback
from tests.conftest import synthetic_arrays


@pytest.fixture(scope="module")
def synthetic():
    (xtr, ytr), (xte, yte) = synthetic_arrays()
    return Dataset("synthetic", xtr, ytr, xte, yte, tuple("0123456789"), "<memory>")


class Pruned(Exception):
    """What a tuner raises to stop a trial that is doing badly."""


class Listener(RunCallback):
    """Records what train() tells it; raises Pruned at the end of epoch `stop_at`."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at, self.epochs, self.ended, self.failed = stop_at, [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, logs["val_accuracy"]))
        if epoch == self.stop_at:
            raise Pruned(f"epoch {epoch + 1}")

    def on_run_end(self, run):
        self.ended.append(run)

    def on_run_failed(self, error):
        self.failed.append(error)


class EpochCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begun = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.begun += 1


@pytest.mark.parametrize("engine", ["fast", "keras"])
def test_an_exception_in_on_epoch_end_stops_the_run_at_once(engine, synthetic, tmp_path):
    listener, counter = Listener(stop_at=0), EpochCounter()
    out = tmp_path / "run"
    with pytest.raises(Pruned, match="epoch 1"):
        train(
            TrainConfig(epochs=3, batch_size=32, engine=engine),
            out=str(out),
            verbose=0,
            dataset=synthetic,
            callbacks=[listener, counter],
        )
    assert [epoch for epoch, _ in listener.epochs] == [0] and counter.begun == 1  # one epoch of three ran
    assert [type(e) for e in listener.failed] == [Pruned] and listener.ended == []
    assert not [t for t in threading.enumerate() if t.name.startswith("checkpoint")]  # the writer is closed
    assert (out / "config.json").exists() and not (out / "metrics.json").exists()


def test_run_end_hears_the_run_and_declarations_decide_the_test_score(synthetic, monkeypatch):
    from mnistlab.training import finish

    scored = []
    real_evaluate = finish.evaluate
    monkeypatch.setattr(finish, "evaluate", lambda *a: scored.append(1) or real_evaluate(*a))
    listener = Listener()
    run = train(epochs=2, batch_size=32, verbose=0, dataset=synthetic, callbacks=[listener])
    assert listener.ended == [run] and listener.failed == [] and len(listener.epochs) == 2
    assert scored == [] and run.metrics["test_accuracy"] == listener.epochs[-1][1]  # it only looked

    class Restorer(Listener):
        changes_weights = True  # as one restoring the best epoch's weights would declare

    train(epochs=1, batch_size=32, verbose=0, dataset=synthetic, callbacks=[Restorer()])
    assert scored == [1]  # the final weights are scored again
    train(epochs=1, batch_size=32, verbose=0, dataset=synthetic, callbacks=[keras.callbacks.Callback()])
    assert scored == [1, 1]  # a plain Keras callback may change them too


def test_a_run_that_fails_before_training_is_reported_failed(synthetic):
    listener = Listener()
    with pytest.raises(UsageError, match="augment > 0 or flip"):
        train(epochs=1, tta=2, verbose=0, dataset=synthetic, callbacks=[listener])
    assert [type(e) for e in listener.failed] == [UsageError] and listener.epochs == []
