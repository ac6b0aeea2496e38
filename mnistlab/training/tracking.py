"""Experiment trackers: a run's figures written where TensorBoard and MLflow read them.

    >>> import mnistlab
    >>> mnistlab.train(model="cnn", out="runs/cnn", callbacks=[mnistlab.TensorBoardLog("runs/cnn/tensorboard")])
    >>> mnistlab.train(model="cnn", callbacks=[mnistlab.MlflowLog("sqlite:///mlflow.db", run_name="cnn")])

Both loggers are run callbacks (training.callbacks.RunCallback): per epoch they record what
history.json records (loss, accuracy, val_loss, val_accuracy; step = epoch number, from 1), and when
train() knows the test score (on_run_end) they record test_loss and test_accuracy and the run's
configuration as hyperparameters; a run that fails (on_run_failed) is closed, and marked failed in
MLflow. They only look, so train() still takes the last validation on the test set as the test
score. The event files come from tensorboardX's writer and the MLflow records from MLflow's own
client: nothing here writes either format by hand. A search's table goes to both through
mnistlab.search.tracking, with the writers here.
"""

import json
import os
import time

from mnistlab.errors import MnistlabError, UsageError, first_line
from mnistlab.storage import CURVES, RunFolder, cannot_write
from mnistlab.training.callbacks import RunCallback

TENSORBOARD_DIR = "tensorboard"  # inside a run or search folder
EXPERIMENT = "mnistlab"  # the MLflow experiment runs go to
SKIPPED = ("data_dir", "extra", "verify_data")  # where the data lay is no hyperparameter


def hyperparameters(config):
    """A TrainConfig (or parameter dict) as flat values TensorBoard and MLflow accept."""
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: hparam_value(v) for k, v in items.items() if k not in SKIPPED}


def hparam_value(value):
    """None -> "default", layer sizes -> "400x100": the command line's spelling."""
    if value is None:
        return "default"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def numbers(logs):
    return {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------- TensorBoard


def summary_writer(logdir):
    from tensorboardX import SummaryWriter

    try:
        return SummaryWriter(logdir=os.fspath(logdir))
    except OSError as e:
        raise cannot_write(logdir, e, "TensorBoard logs to") from None


def write_hparams(writer, params, metrics, step=None):
    """The HParams dashboard's record of one session: its parameters and final metrics."""
    from tensorboardX.summary import hparams

    for name, value in metrics.items():  # the dashboard reads the metrics' values as scalars
        writer.add_scalar(name, value, step)
    for summary in hparams(params, metrics):
        writer.file_writer.add_summary(summary, step)


class TensorBoardLog(RunCallback):
    """TensorBoard event files in `logdir`: per-epoch scalars, the config as text and hparams."""

    def __init__(self, logdir, config=None):
        super().__init__()
        self.logdir, self.config, self.writer = os.fspath(logdir), config, None

    def open(self):
        if self.writer is None:
            self.writer = summary_writer(self.logdir)
            if self.config is not None:
                text = json.dumps(self.config.to_dict(), indent=2)
                self.writer.add_text("config", "    " + text.replace("\n", "\n    "))  # markdown code block
        return self.writer

    def on_train_begin(self, logs=None):
        self.open()

    def on_epoch_end(self, epoch, logs=None):
        writer = self.open()
        for name, value in numbers(logs).items():
            writer.add_scalar(name, value, epoch + 1)
        writer.flush()  # a killed run keeps the epochs it finished

    def on_run_end(self, run):
        """train()'s last word: the test score, and the hyperparameters with it."""
        metrics = {k: float(run.metrics[k]) for k in ("test_accuracy", "test_loss") if k in run.metrics}
        write_hparams(self.open(), hyperparameters(self.config or run.config), metrics, run.metrics.get("epochs", 0))
        self.close()

    def on_run_failed(self, error):
        """The epochs written so far stay; the file is closed."""
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ----------------------------------------------------------------------------- MLflow


def mlflow_client(uri):
    try:
        from mlflow import MlflowClient  # pyright: ignore[reportMissingImports]  (the optional mlflow extra)
    except ImportError:
        raise UsageError("--mlflow needs MLflow: pip install 'mnistlab[mlflow]'") from None
    return mlflow_guard(uri, MlflowClient, tracking_uri=uri)


def mlflow_guard(uri, call, *args, **kwargs):
    """An MLflow call whose failure (a refused store, a server not answering) is one clear line."""
    try:
        return call(*args, **kwargs)
    except Exception as e:  # MLflow raises its own kinds, and requests', and OSError
        if isinstance(e, MnistlabError):
            raise
        raise MnistlabError(f"MLflow at {uri}: {first_line(e)}") from None


def start_mlflow_run(client, uri, name, params, tags=None):
    def start():
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        run_id = client.create_run(experiment_id, run_name=name, tags=tags or {}).info.run_id
        log_mlflow(client, run_id, params=params)
        return run_id

    return mlflow_guard(uri, start)


def log_mlflow(client, run_id, metrics=None, step=0, params=None):
    from mlflow.entities import Metric, Param  # pyright: ignore[reportMissingImports]  (the mlflow extra)

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
    )


class MlflowLog(RunCallback):
    """An MLflow run in experiment "mnistlab" at tracking URI `uri`: the config as params,
    per-epoch metrics, the test score, and the run folder's learning curves as artifacts."""

    def __init__(self, uri, config=None, run_name=None):
        super().__init__()
        self.uri, self.config, self.run_name = uri, config, run_name
        self.client = mlflow_client(uri)  # a missing MLflow fails before any training
        self.run_id = None
        self.ended = False  # the MLflow run is marked FINISHED or FAILED
        if config is not None:  # so that a refused store fails before any training too
            self.start()

    def start(self):
        if self.run_id is None:
            params = hyperparameters(self.config) if self.config is not None else {}
            self.run_id = start_mlflow_run(self.client, self.uri, self.run_name, params)
        return self.run_id

    def on_train_begin(self, logs=None):
        self.start()

    def on_epoch_end(self, epoch, logs=None):
        mlflow_guard(self.uri, log_mlflow, self.client, self.start(), numbers(logs), epoch + 1)

    def on_run_end(self, run):
        run_id = self.start()

        def finish():
            metrics = {k: v for k, v in run.metrics.items() if k.startswith("test_") or k == "train_seconds"}
            log_mlflow(
                self.client,
                run_id,
                metrics,
                run.metrics.get("epochs", 0),
                params=hyperparameters(run.config) if self.config is None else None,
            )
            if run.out:
                folder = RunFolder(run.out)
                for path in map(folder.curve_path, CURVES):  # config and metrics are logged as such already
                    if os.path.isfile(path):
                        self.client.log_artifact(run_id, path)
                self.client.set_tag(run_id, "mnistlab.run_folder", os.path.abspath(run.out))
            self.client.set_terminated(run_id, "FINISHED")
            self.ended = True

        mlflow_guard(self.uri, finish)

    def on_run_failed(self, error):
        """The run failed or was interrupted: say so in MLflow rather than leave it 'running' (once)."""
        if self.run_id is not None and not self.ended:
            self.ended = True
            try:
                self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # the original failure matters more
                pass
