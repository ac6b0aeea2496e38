import json

import keras
import numpy as np
import pytest

from mnistlab import TrainConfig, evaluate, train
from mnistlab.data import Dataset
from mnistlab.report.runs import summarize
from mnistlab.training import RunCallback
from mnistlab.training.ensemble import member_config
from tests.conftest import synthetic_arrays
from tests.training.test_train import mnist_slice


@pytest.fixture
def synthetic():
    (xtr, ytr), (xte, yte) = synthetic_arrays()
    return Dataset("synthetic", xtr, ytr, xte, yte, tuple("0123456789"), "<memory>")


def predictions(model_file, x):
    return keras.models.load_model(model_file).predict(x, verbose=0)


def test_an_ensemble_averages_its_members_each_a_run_of_its_own_seed(synthetic, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(epochs=2, batch_size=32, seed=3, members=2, augment=0.1, tta=2)
    run = train(config, out=str(out), verbose=0, dataset=synthetic)
    members = [TrainConfig.from_folder(str(out / "members" / str(i))) for i in range(2)]
    assert [m.seed for m in members] == [6, 7] == run.metrics["member_seeds"]  # seed x members + index
    assert all(m.members == 1 and m.tta == 0 for m in members)  # the copies score the ensemble

    x = synthetic.x_test.reshape(len(synthetic.x_test), -1).astype("float32") / 255.0
    each = [predictions(out / "members" / str(i) / "model.keras", x) for i in range(2)]
    ensemble = predictions(out / "model.keras", x)  # stock Keras
    np.testing.assert_allclose(ensemble, np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different networks

    metrics = json.loads((out / "metrics.json").read_text())
    member_metrics = [json.loads((out / "members" / str(i) / "metrics.json").read_text()) for i in range(2)]
    assert metrics["member_test_accuracy"] == [m["test_accuracy"] for m in member_metrics]
    scored = evaluate(run.model, synthetic.x_test, synthetic.y_test)
    assert metrics["test_accuracy"] == pytest.approx(scored["test_accuracy"])
    assert metrics["tta_copies"] == 2 and 0 < metrics["tta_test_accuracy"] <= 1
    assert metrics["epochs"] == 4 and len(json.loads((out / "history.json").read_text())["loss"]) == 4

    # member 0 is the run a single network of its seed would be
    alone = train(TrainConfig(epochs=2, batch_size=32, seed=6, augment=0.1), verbose=0, dataset=synthetic)
    loaded = keras.models.load_model(out / "members" / "0" / "model.keras")
    for a, b in zip(alone.model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_members_share_the_time_budget(mnist, tmp_path):
    out, data = tmp_path / "run", mnist_slice(mnist, 2000, 500)
    # a first run on a cold cache builds the CPU kernels and compiles its programs (~6 s): not in 3 s
    train(model="dnn", epochs=1, verbose=0, dataset=data)
    run = train(out=str(out), model="dnn", time_budget=6, members=2, verbose=0, dataset=data)
    budgets = [TrainConfig.from_folder(str(out / "members" / str(i))).time_budget for i in range(2)]
    first = json.loads((out / "members" / "0" / "metrics.json").read_text())["train_seconds"]
    assert budgets == [3, pytest.approx(6 - first)]  # the second member has what the first left
    assert run.metrics["time_budget_s"] == 6 and run.metrics["train_seconds"] <= 6 * 1.05
    # each member planned its 3 s (the guard may cut a member's last planned epoch)
    plans = [TrainConfig.from_folder(str(out / "members" / str(i))).epochs for i in range(2)]
    assert run.metrics["planned_epochs"] == sum(plans) >= sum(run.metrics["member_epochs"])
    assert min(run.metrics["member_epochs"]) > 2 and run.metrics["epochs"] == sum(run.metrics["member_epochs"])


def test_a_member_has_its_share_of_what_the_members_before_it_left():
    config = TrainConfig(time_budget="10m", members=3)
    assert member_config(config, 0).time_budget == 200
    # the first ended 62 s short of its 200 (its epochs did not fill them): the other two share 462 s
    assert member_config(config, 1, spent=138).time_budget == 231
    assert member_config(config, 2, spent=138 + 231).time_budget == 231
    assert member_config(TrainConfig(epochs=3, members=2), 1, spent=40).time_budget is None


def test_a_run_killed_in_its_second_member_resumes_there_keeping_the_first(synthetic, tmp_path):
    class Killed(RunCallback):  # the caller's callback: it hears the members' epochs numbered on
        def __init__(self):
            super().__init__()
            self.epochs, self.failed = [], []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)
            if epoch == 2:  # the second member's first epoch
                raise KeyboardInterrupt

        def on_run_failed(self, error):
            self.failed.append(error)

    out = tmp_path / "run"
    config = TrainConfig(epochs=2, batch_size=32, seed=0, members=2)
    whole = train(config, verbose=0, dataset=synthetic)
    killed = Killed()
    with pytest.raises(KeyboardInterrupt):
        train(config, out=str(out), verbose=0, dataset=synthetic, callbacks=[killed])
    assert killed.epochs == [0, 1, 2] and len(killed.failed) == 1  # told once, by the ensemble
    first = out / "members" / "0" / "model.keras"
    written = first.stat().st_mtime_ns
    assert not (out / "metrics.json").exists() and not (out / "members" / "1" / "metrics.json").exists()
    assert summarize(str(out)).problem.startswith("1 of 2 members trained; mnistlab train --resume")  # mnistlab runs

    resumed = train(TrainConfig.from_folder(str(out)), out=str(out), verbose=0, dataset=synthetic, resume=True)
    assert first.stat().st_mtime_ns == written  # read back, not trained again
    assert resumed.metrics["test_accuracy"] == pytest.approx(whole.metrics["test_accuracy"])
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)
