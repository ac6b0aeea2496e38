"""mnistlab.storage: the run folder's and the search folder's files, each written atomically and
read back; damaged files give one clear MnistlabError; and `mnistlab evaluate` picks its test set
as the rule says (an explicit --dataset, else the run folder's config.json, else mnist).
The folders' lock and full-disk errors: tests/storage/test_lock.py."""

import csv
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnistlab import storage
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.storage import RunFolder, SearchFolder, folder_kind, run_folder
from mnistlab.training.config import TrainConfig
from tests.conftest import synthetic_arrays, write_dataset


def tiny_model():
    import keras

    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


HISTORY = {"loss": [0.5, 0.25], "accuracy": [0.8, 0.9], "val_loss": [0.4, 0.3], "val_accuracy": [0.85, 0.88]}


# ----------------------------------------------------------------------------- run folder


def test_run_folder_round_trip(tmp_path):
    import keras

    run = RunFolder(tmp_path / "run")
    config = TrainConfig(model="cnn", dataset="fashion-mnist", epochs=2, hidden=[40, 20], seed=9)
    with run.start(config.to_dict()):
        assert RunFolder.is_run(run.path) and folder_kind(run.path) == "run" and not run.finished()
    back = TrainConfig.from_folder(run)
    assert dataclasses.replace(back, extra={}) == config and TrainConfig.from_folder(run.path) == back
    assert back.extra == {"backend": keras.backend.backend(), "keras_version": keras.__version__}
    assert run.read_config() == config.to_dict() | back.extra
    assert run.read_config()["dataset"] == "fashion-mnist" and run.dataset() == "fashion-mnist"

    model = tiny_model()
    metrics = {"test_loss": 0.3, "test_accuracy": 0.88, "train_seconds": 1.5, "epochs": 2}
    pngs = {"accuracy": b"\x89PNG accuracy", "loss": b"\x89PNG loss"}
    run.write_results(config.to_dict(), model, HISTORY, metrics, pngs)
    assert run.finished()
    assert sorted(os.listdir(run.path)) == [
        "accuracy.png",
        "config.json",
        "history.csv",
        "history.json",
        "loss.png",
        "metrics.json",
        "model.keras",
    ]
    assert run.read_history() == HISTORY and run.read_metrics() == metrics
    assert run.read_curve("accuracy") == pngs["accuracy"] and run.read_curve("loss") == pngs["loss"]
    rows = list(csv.DictReader(io.StringIO(Path(run.file(RunFolder.HISTORY_CSV)).read_text())))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["val_accuracy"]) == 0.88
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    for a, b in zip(run.load_model().get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a run folder, or the model.keras inside one, leads back to the folder
    assert RunFolder.holding(run.path).path == run.path
    assert RunFolder.holding(run.model_path).path == run.path
    assert RunFolder.holding(tmp_path) is None
    assert storage.model_path(run.path) == run.model_path
    assert run.report_path == os.path.join(run.path, "report.html")


def test_a_folder_without_results_is_empty_to_read(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_history() == {} and run.read_metrics() == {} and run.read_curve("loss") is None
    assert run.dataset() == "mnist" and run.dataset(default="x") == "x"
    assert run.latest_checkpoint() is None


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "config.json not found"),
        ("{not json", "cannot read it as JSON"),
        ("[1, 2]", "not a valid run configuration"),
        ('{"epochs": 0}', "not a valid run configuration"),
        ('{"epochs": "two"}', "not a valid run configuration"),
    ],
)
def test_damaged_config_is_one_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(MnistlabError, match=message) as caught:
        TrainConfig.from_folder(RunFolder(tmp_path))
    assert type(caught.value) is MnistlabError and not isinstance(caught.value, UsageError)
    assert "\n" not in str(caught.value) and str(tmp_path / "config.json") in str(caught.value)


def test_prepare_refuses_an_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(MnistlabError, match="cannot write to output folder"):
        RunFolder(tmp_path / "file" / "run").prepare()
    with pytest.raises(MnistlabError, match="cannot write to output folder"):
        SearchFolder(tmp_path / "file" / "search").prepare()
    assert (tmp_path / "file").read_text() == "keep me"
    with RunFolder(tmp_path / "new") as new:
        assert new.path == str(tmp_path / "new")
        assert os.listdir(new.path) == [".lock"]  # the write probe is gone; the lock is held
    assert os.listdir(new.path) == []


def test_models_that_do_not_load_are_one_clear_error(tmp_path):
    (tmp_path / "model.keras").write_text("hello")
    with pytest.raises(MnistlabError, match="not a Keras model file"):
        storage.load_model(tmp_path / "model.keras")
    with pytest.raises(MnistlabError, match="no such model file"):
        storage.load_model(tmp_path / "missing")


# ----------------------------------------------------------------------------- checkpoints


def arrays(k):
    return [np.full((3, 2), k, np.float32), np.arange(k, k + 4, dtype=np.float32)]


def test_checkpoint_round_trip_keeps_only_the_last(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint(arrays(1), 1, {"loss": [0.5]})
    run.save_checkpoint(arrays(2), 2, {"loss": [0.5, 0.4]})
    assert sorted(os.listdir(run.checkpoint_dir)) == ["epoch-0002.npz", "state.json"]
    state = run.latest_checkpoint()
    assert (state.epoch, state.history, os.path.basename(state.path)) == (2, {"loss": [0.5, 0.4]}, "epoch-0002.npz")
    for a, b in zip(run.load_checkpoint(state), arrays(2)):
        np.testing.assert_array_equal(a, b)
    run.remove_checkpoint()
    assert not os.path.exists(run.checkpoint_dir) and run.latest_checkpoint() is None


def test_a_kill_before_state_json_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run = RunFolder(tmp_path)
    run.save_checkpoint(arrays(1), 1, {"loss": [0.5]})

    def killed(path, obj):
        raise KeyboardInterrupt  # the new .npz is written; state.json is not

    monkeypatch.setattr(run_folder, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(arrays(2), 2, {"loss": [0.5, 0.4]})
    assert sorted(os.listdir(run.checkpoint_dir)) == ["epoch-0001.npz", "epoch-0002.npz", "state.json"]
    state = run.latest_checkpoint()
    assert state.epoch == 1
    np.testing.assert_array_equal(run.load_checkpoint(state)[0], arrays(1)[0])


@pytest.mark.parametrize(
    "state, npz",
    [
        ("{not json", None),
        ('{"epoch": 1}', None),
        ('{"epoch": 1, "file": "epoch-0001.npz", "history": {}}', None),  # names a missing file
        ('{"epoch": "one", "file": "epoch-0001.npz", "history": {}}', b""),
        ('{"epoch": 1, "file": "epoch-0001.npz", "history": []}', b""),
    ],
)
def test_damaged_state_json_is_one_clear_error(tmp_path, state, npz):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(state)
    if npz is not None:
        (tmp_path / "checkpoint" / "epoch-0001.npz").write_bytes(npz)
    with pytest.raises(MnistlabError, match="damaged checkpoint") as caught:
        RunFolder(tmp_path).latest_checkpoint()
    assert "delete" in str(caught.value) and "\n" not in str(caught.value)


def test_corrupt_checkpoint_arrays_are_one_clear_error(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text('{"epoch": 1, "file": "epoch-0001.npz", "history": {}}')
    (tmp_path / "checkpoint" / "epoch-0001.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    run = RunFolder(tmp_path)
    with pytest.raises(MnistlabError, match="damaged checkpoint"):
        run.load_checkpoint(run.latest_checkpoint())


# ----------------------------------------------------------------------------- search folder


def test_search_folder_round_trip(tmp_path):
    search = SearchFolder(tmp_path / "search")
    settings = {"grid": [{"optimizer": ["SGD", "Adam"]}], "cv": {"n_splits": 2}}
    search.write_settings(settings)
    assert search.read_settings() == settings and search.holds_settings(settings)
    assert not search.holds_settings({"cv": 3}) and not search.finished()
    assert not SearchFolder.is_search(search.path)

    rows = [{"params": {"optimizer": "SGD"}, "mean_test_score": 0.5, "rank_test_score": 1}]
    search.write_results(rows, "param_optimizer,mean_test_score\nSGD,0.5\n")
    assert search.finished() and SearchFolder.is_search(search.path) and folder_kind(search.path) == "search"
    assert search.read_results() == rows
    assert Path(search.file(SearchFolder.RESULTS_CSV)).read_text() == "param_optimizer,mean_test_score\nSGD,0.5\n"
    assert search.read_best() == {}
    search.write_best({"best_params": {"optimizer": "SGD"}})
    assert search.read_best() == {"best_params": {"optimizer": "SGD"}}
    assert search.read_scores() is None
    search.save_scores(b"\x89PNG scores")
    assert search.read_scores() == b"\x89PNG scores"
    model = tiny_model()
    search.save_best_model(model)
    for a, b in zip(storage.load_model(search.best_model_path).get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)

    assert search.count_records() == 0 and search.load_record("abc") is None
    search.save_record("abc", {"spec": {"fold": 0}, "result": {"test_score": 0.5}})
    assert search.count_records() == 1
    assert search.load_record("abc") == {"spec": {"fold": 0}, "result": {"test_score": 0.5}}
    Path(search.record_path("abc")).write_text('{"spec": {"fo')
    assert search.load_record("abc") is None  # a damaged record is not trusted, nor an error
    assert sorted(os.listdir(search.path)) == [
        "best.json",
        "best_model.keras",
        "fits",
        "results.csv",
        "results.json",
        "scores.png",
        "search.json",
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "missing"),
        ("{not json", "cannot read it as JSON"),
        ('{"params": 1}', "not a search's results table"),
        ("[]", "the search has no results"),
    ],
)
def test_damaged_results_are_one_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(MnistlabError, match=message):
        SearchFolder(tmp_path).read_results()


def test_damaged_search_json_reads_as_not_this_search(tmp_path):
    (tmp_path / "search.json").write_text("{not json")
    search = SearchFolder(tmp_path)
    assert not search.holds_settings({})
    with pytest.raises(MnistlabError, match="cannot read it as JSON"):
        search.read_settings()


# ----------------------------------------------------------------------------- which kind of folder


def test_folder_kind(tmp_path):
    with pytest.raises(MnistlabError, match="no such folder"):
        folder_kind(tmp_path / "absent")
    with pytest.raises(MnistlabError, match="neither a run folder"):
        folder_kind(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert folder_kind(tmp_path) == "run"
    (tmp_path / "results.json").write_text("[]")
    assert folder_kind(tmp_path) == "search"  # results.json decides, as the report always did


# ----------------------------------------------------------------------------- mnistlab evaluate's test set


@pytest.fixture(scope="module")
def fashion_run(dnn_run, tmp_path_factory):
    """A run folder whose config.json says fashion-mnist, next to a model really trained on MNIST."""

    out = Path(shutil.copytree(dnn_run, tmp_path_factory.mktemp("fashion") / "run"))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"dataset": "fashion-mnist"}))
    return out


@pytest.fixture
def data_root(mnist, tmp_path, monkeypatch):
    """MNISTLAB_DATA holding the real mnist/ and a small stand-in fashion-mnist/ (synthetic, unverified)."""
    from mnistlab.data.load import find

    root = tmp_path / "data"
    root.mkdir()
    os.symlink(Path(next(iter(find("mnist").values()))).parent, root / "mnist")
    write_dataset(root / "fashion-mnist", synthetic_arrays(n_train=64, n_test=50, seed=1))
    monkeypatch.setenv("MNISTLAB_DATA", str(root))
    return root


def evaluate_json(capsys, *argv):
    from mnistlab.cli import main

    assert main(["evaluate", *argv, "--no-verify", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_evaluate_explicit_dataset_wins_over_the_run_folder(fashion_run, data_root, mnist, capsys):
    from mnistlab import evaluate, load_model

    model = load_model(fashion_run)
    (_, _), (x_stand_in, y_stand_in) = synthetic_arrays(n_train=64, n_test=50, seed=1)

    explicit = evaluate_json(capsys, str(fashion_run), "--dataset", "mnist")
    assert explicit["dataset"] == "mnist"
    assert explicit["test_accuracy"] == pytest.approx(evaluate(model, mnist.x_test, mnist.y_test)["test_accuracy"])
    assert explicit["test_accuracy"] > 0.8  # trained on MNIST: it does recognise MNIST digits

    from_config = evaluate_json(capsys, str(fashion_run))
    assert from_config["dataset"] == "fashion-mnist"
    assert from_config["test_accuracy"] == pytest.approx(evaluate(model, x_stand_in, y_stand_in)["test_accuracy"])

    by_file = evaluate_json(capsys, str(fashion_run / "model.keras"))  # the model.keras of a run folder, too
    assert by_file["dataset"] == "fashion-mnist"


def test_evaluate_a_bare_model_file_defaults_to_mnist(fashion_run, data_root, tmp_path, capsys):
    import shutil

    shutil.copy(fashion_run / "model.keras", tmp_path / "bare.keras")
    assert evaluate_json(capsys, str(tmp_path / "bare.keras"))["dataset"] == "mnist"
