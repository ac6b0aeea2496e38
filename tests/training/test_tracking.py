"""Trackers: `train --tensorboard` and `search --tensorboard` write TensorBoard event files that
TensorBoard's own reader reads back as the run's per-epoch figures; `--mlflow` logs to an MLflow
store; loggers leave train()'s test-score shortcut alone; a notebook gets a progress bar
without escape codes, and so does a log (one line per epoch)."""

import json
import os
import subprocess
import sys
import types

import keras
import pytest

from mnistlab.cli import main
from mnistlab.data import load_dataset

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def events(logdir):
    reader = event_accumulator.EventAccumulator(str(logdir))
    reader.Reload()
    return reader


def scalars(reader, tag):
    return [(e.step, e.value) for e in reader.Scalars(tag)]


def session_hparams(reader):
    """The hyperparameters of the HParams dashboard's session record, as TensorBoard decodes them."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value or v.bool_value for k, v in info.hparams.items()}


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    """A real run trained by the command, three epochs on the synthetic digits, with --tensorboard."""
    from tests.conftest import synthetic_arrays, write_dataset

    root = tmp_path_factory.mktemp("tb")
    data = write_dataset(root / "data", synthetic_arrays())
    out = root / "run"
    assert (
        main(
            ["train", "--data-dir", str(data), "--no-verify", "--epochs", "3", "--out", str(out), "--tensorboard", "-q"]
        )
        == 0
    )
    return out, data


@pytest.mark.slow
def test_train_tensorboard_scalars_are_the_history(tb_run):
    out, _ = tb_run
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    reader = events(out / "tensorboard")
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        got = scalars(reader, name)
        assert [step for step, _ in got] == [1, 2, 3]
        assert [value for _, value in got] == pytest.approx(history[name], rel=1e-6)  # float32 in the file
    assert scalars(reader, "test_accuracy") == [(3, pytest.approx(metrics["test_accuracy"], rel=1e-6))]
    config = reader.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"model": "dnn"' in config and '"epochs": 3' in config
    hparams = session_hparams(reader)
    assert hparams["model"] == "dnn" and hparams["epochs"] == 3 and hparams["optimizer"] == "Adam"


@pytest.mark.slow
def test_tensorboard_inspect_reads_the_run(tb_run):
    out, _ = tb_run
    command = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    done = subprocess.run(
        [command, "--inspect", "--logdir", str(out / "tensorboard")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = done.stdout.split("Event statistics")[0]
    assert all(f"   {tag}\n" in listed for tag in ("val_accuracy", "val_loss", "accuracy", "loss"))
    assert "num_steps            3" in done.stdout


@pytest.mark.slow
def test_search_tensorboard_has_one_run_per_parameter_set(tb_run, tmp_path):
    _, data = tb_run
    out, logs = tmp_path / "search", tmp_path / "logs"
    assert (
        main(
            [
                "search",
                "--data-dir",
                str(data),
                "--no-verify",
                "--grid",
                "optimizer=SGD,Adam",
                "--cv",
                "2",
                "--epochs",
                "1",
                "--no-refit",
                "--out",
                str(out),
                "--tensorboard",
                str(logs),
                "-q",
            ]
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())
    runs = sorted(os.listdir(logs / "search"))
    assert len(runs) == 2 and {r.split("-", 1)[1] for r in runs} == {"SGD", "Adam"}
    for row in rows:
        [name] = [r for r in runs if r.endswith("-" + row["params"]["optimizer"])]
        assert name.startswith(f"{row['rank_test_score']:02d}-")
        reader = events(logs / "search" / name)
        assert scalars(reader, "cv/fold_accuracy") == [
            (1, pytest.approx(row["split0_test_score"], rel=1e-6)),
            (2, pytest.approx(row["split1_test_score"], rel=1e-6)),
        ]
        assert scalars(reader, "cv/mean_accuracy")[0][1] == pytest.approx(row["mean_test_score"], rel=1e-6)
        assert session_hparams(reader) == {"optimizer": row["params"]["optimizer"]}


@pytest.fixture
def synthetic(tb_run):
    return load_dataset("mnist", tb_run[1], verify=False)


def test_loggers_keep_the_validation_shortcut(synthetic, tmp_path, monkeypatch):
    """The last validation measured the final weights on the test set: a logger does not change
    that, so train() scores no second time; a callback that might change the weights does."""
    from mnistlab.training import finish, loop
    from mnistlab.training.tracking import TensorBoardLog

    scored = []
    real_evaluate = finish.evaluate
    monkeypatch.setattr(finish, "evaluate", lambda *a: scored.append(1) or real_evaluate(*a))
    run = loop.train(epochs=1, verbose=0, dataset=synthetic, callbacks=[TensorBoardLog(tmp_path / "tb")])
    assert scored == [] and run.metrics["test_accuracy"] == run.history["val_accuracy"][-1]
    loop.train(epochs=1, verbose=0, dataset=synthetic, callbacks=[keras.callbacks.Callback()])
    assert scored == [1]


@pytest.mark.slow
def test_notebook_progress_prints_no_escape_codes(synthetic, monkeypatch, capsys):
    from mnistlab.training import loop
    from mnistlab.training.fastpath import progress

    for engine in ("fast", "keras"):
        loop.train(epochs=2, verbose=1, dataset=synthetic, engine=engine)
        out = capsys.readouterr().out  # not a terminal: one plain line per epoch
        assert [line.split("  ")[0] for line in out.splitlines()] == ["epoch 1/2", "epoch 2/2"], out
        assert "val_accuracy" in out and "\x1b" not in out and "\r" not in out and "\b" not in out
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    for engine in ("fast", "keras"):
        loop.train(epochs=2, verbose=1, dataset=synthetic, engine=engine)
        assert "\x1b[" in capsys.readouterr().out  # in a terminal: Keras' own bar, escape codes and all
    kernel = types.ModuleType("ipykernel.zmqshell")  # as inside a Jupyter kernel: its shell running
    kernel.ZMQInteractiveShell = type("ZMQInteractiveShell", (), {"initialized": staticmethod(lambda: True)})
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", kernel)
    for engine in ("fast", "keras"):
        loop.train(epochs=2, verbose=1, dataset=synthetic, engine=engine)
        out = capsys.readouterr().out
        assert "Epoch 1/2" in out and "Epoch 2/2" in out and "val_accuracy=" in out, out
        assert "\x1b[" not in out and "\b" not in out


# ----------------------------------------------------------------------------- MLflow


def mlflow_runs(store):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("mnistlab")
    return client, client.search_runs([experiment.experiment_id])


def test_train_mlflow_logs_the_run(tb_run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps a local file store behind this switch
    _, data = tb_run
    store, out = (tmp_path / "mlruns").as_uri(), tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(data),
                "--no-verify",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--mlflow",
                store,
                "-q",
            ]
        )
        == 0
    )
    client, [run] = mlflow_runs(store)
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model"] == "dnn" and run.data.params["epochs"] == "2"
    for name in ("loss", "val_accuracy"):
        logged = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in logged] == [(i + 1, pytest.approx(v)) for i, v in enumerate(history[name])]
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"accuracy.png", "loss.png"}
    assert run.data.tags["mnistlab.run_folder"] == str(out)


def test_a_run_that_fails_is_marked_failed_in_mlflow(synthetic, tmp_path, monkeypatch):
    """train() tells its run callbacks that the run failed (RunCallback.on_run_failed): MLflow's run
    is FAILED, not left running, with the epochs it finished; a second word changes nothing."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mnistlab.training import loop
    from mnistlab.training.tracking import MlflowLog

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("crashed")

    store = (tmp_path / "mlruns").as_uri()
    log = MlflowLog(store, run_name="crash")
    with pytest.raises(RuntimeError, match="crashed"):
        loop.train(epochs=3, verbose=0, dataset=synthetic, callbacks=[log, Crash()])
    log.on_run_failed(KeyboardInterrupt())
    client, [run] = mlflow_runs(store)
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]


def test_search_mlflow_logs_each_parameter_set(tb_run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _, data = tb_run
    store, out = (tmp_path / "mlruns").as_uri(), tmp_path / "search"
    assert (
        main(
            [
                "search",
                "--data-dir",
                str(data),
                "--no-verify",
                "--grid",
                "optimizer=SGD,Adam",
                "--cv",
                "2",
                "--epochs",
                "1",
                "--no-refit",
                "--out",
                str(out),
                "--mlflow",
                store,
                "-q",
            ]
        )
        == 0
    )
    rows = {r["params"]["optimizer"]: r for r in json.loads((out / "results.json").read_text())}
    client, runs = mlflow_runs(store)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {
        r.data.params["optimizer"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"SGD", "Adam"}
    for name, child in children.items():
        assert child.data.metrics["cv_mean_accuracy"] == pytest.approx(rows[name]["mean_test_score"])
        folds = client.get_metric_history(child.info.run_id, "cv_fold_accuracy")
        assert [m.step for m in folds] == [1, 2]


def test_mlflow_errors_are_one_line(tb_run, tmp_path, monkeypatch, capsys):
    _, data = tb_run
    args = ["train", "--data-dir", str(data), "--no-verify", "--epochs", "1", "--out", str(tmp_path / "run"), "-q"]
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as where mnistlab[mlflow] is not installed
    assert main([*args, "--mlflow", "sqlite:///x.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'mnistlab[mlflow]'" in err
    assert not (tmp_path / "run").exists()  # refused before any training
    monkeypatch.delitem(sys.modules, "mlflow")
    if pytest.importorskip("mlflow"):
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
        assert main([*args, "--mlflow", (tmp_path / "mlruns").as_uri()]) == 1  # MLflow 3 refuses a file store
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mnistlab train: error: MLflow at file:")
