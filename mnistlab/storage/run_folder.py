"""A training run's folder (`mnistlab train`), and the one place that knows its files::

    config.json      the run's configuration (a TrainConfig's fields), plus the Keras backend
                     and version; written first
    model.keras      the trained model
    history.json     per-epoch loss and accuracy, train and validation
    history.csv      the same as a table, one row per epoch
    metrics.json     test loss and accuracy, training time; its presence means "finished"
    temperature.json with mnistlab calibrate or train --calibrate: the temperature that calibrates
                     the model's probabilities (mnistlab.calibration), which load_model attaches
    model.onnx       with mnistlab export --onnx or train --export onnx: the model for onnxruntime
                     (mnistlab.export writes it, mnistlab.onnx_model runs it)
    accuracy.png     learning curves, drawn by mnistlab.training.curves
    loss.png
    report.html      mnistlab report
    tensorboard/     with --tensorboard: TensorBoard's event files (mnistlab.training.tracking)
    checkpoint/      while training runs: state.json naming the last epoch-NNNN.npz
    members/<i>/     with --members N: each member's own run folder (model.keras above averages them)
    .lock            while a process writes the folder (storage.folder)

RunFolder reads and writes plain data (dicts, arrays, PNG bytes): what a configuration means
is mnistlab.training's business (TrainConfig.from_folder).
"""

import csv
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from typing import TypeGuard

from mnistlab.errors import MnistlabError
from mnistlab.storage.files import atomic_path, read_bytes, read_json, write_bytes, write_json, write_text
from mnistlab.storage.folder import Folder, writes
from mnistlab.storage.model_file import MODEL, model_path, save_model, set_temperature
from mnistlab.storage.model_file import load_model as load_model_file

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
CURVES = ("accuracy", "loss")  # the learning curves a run folder holds, one PNG each


def history_csv(history):
    """history.json's lists as CSV text: an epoch column, then the known keys first."""
    keys = [k for k in HISTORY_KEYS if k in history] + sorted(set(history) - set(HISTORY_KEYS))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch"] + keys)
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1] + [history[k][i] for k in keys])
    return buf.getvalue()


@dataclass
class CheckpointState:
    """A run folder's last finished epoch, as checkpoint/state.json names it."""

    epoch: int  # epochs finished
    path: str  # the .npz of weights and optimizer variables
    history: dict
    seconds: float = 0.0  # training's seconds until then (0: a checkpoint from before they were kept)


class RunFolder(Folder):
    """One training run's folder (see the module's docstring for its files)."""

    KIND = "run folder"
    CONFIG = "config.json"
    MODEL = MODEL
    HISTORY = "history.json"
    HISTORY_CSV = "history.csv"
    METRICS = "metrics.json"
    TEMPERATURE = "temperature.json"
    ONNX = "model.onnx"
    FINISHED = METRICS  # written with the run's other results
    CHECKPOINT = "checkpoint"
    MEMBERS = "members"
    STATE = "state.json"

    @property
    def config_path(self):
        return self.file(self.CONFIG)

    @property
    def model_path(self):
        return self.file(self.MODEL)

    @property
    def temperature_path(self):
        return self.file(self.TEMPERATURE)

    @property
    def checkpoint_dir(self):
        return self.file(self.CHECKPOINT)

    @property
    def state_path(self):
        return os.path.join(self.checkpoint_dir, self.STATE)

    def member(self, index):
        """The run folder of an ensemble's member `index` (--members)."""
        return RunFolder(os.path.join(self.path, self.MEMBERS, str(index)))

    def curve_path(self, metric):
        return self.file(metric + ".png")

    @staticmethod
    def is_run(path):
        """A folder holding config.json (written when a run starts)."""
        return os.path.isfile(os.path.join(os.fspath(path), RunFolder.CONFIG))

    @classmethod
    def holding(cls, path):
        """The run folder that `path` (a run folder, or the model.keras in one) belongs to, or None."""
        path = os.fspath(path)
        if os.path.isdir(path):
            return cls(path) if cls.is_run(path) else None
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) == cls.MODEL and cls.is_run(parent):
            return cls(os.path.dirname(path) or ".")
        return None

    # -- writing (each write atomic; an OSError names the folder: storage.folder.writes)

    def start(self, config):
        """Prepare (and lock) the folder and write config.json before training, so --resume can
        rerun it; returns the folder, to hold as a context manager until the run ends."""
        took = not self.held
        self.prepare()
        try:
            self.write_config(config)
        except BaseException:
            if took:
                self.close()
            raise
        return self

    @writes
    def write_config(self, config):
        """config.json: the dict `config`, plus the Keras backend and version."""
        import mnistlab.backend  # noqa: F401

        import keras

        write_json(
            self.config_path, dict(config) | {"backend": keras.backend.backend(), "keras_version": keras.__version__}
        )

    @writes
    def write_results(self, config, model, history, metrics, curves=None):
        """Everything a finished run leaves: the model, history, metrics, config and the curves
        (`curves` maps a metric to its PNG's bytes). start() made the folder and checked it."""
        save_model(model, self.model_path)
        self.write_history(history)
        write_json(self.file(self.METRICS), metrics)
        self.write_config(config)
        for metric, png in (curves or {}).items():
            write_bytes(self.curve_path(metric), png, suffix=".png")

    @writes
    def write_history(self, history):
        write_json(self.file(self.HISTORY), history)
        write_text(self.file(self.HISTORY_CSV), history_csv(history))

    @writes
    def write_calibration(self, calibration, scores):
        """temperature.json (the dict `calibration`: its "temperature" and how it was fitted) and the
        figures `scores` merged into metrics.json: metrics.json first, so that a kill between the two
        leaves the model uncalibrated, never calibrated without its figures."""
        temperature = calibration.get("temperature")
        if not is_temperature(temperature):
            raise ValueError(f"a temperature must be a positive number, got {temperature!r}")
        write_json(self.file(self.METRICS), self.read_metrics() | dict(scores))
        write_json(self.temperature_path, dict(calibration))

    # -- reading

    def read_config(self):
        """config.json as written (the configuration's fields plus backend and keras_version);
        missing, or not a JSON object: one clear MnistlabError."""
        if not os.path.isfile(self.config_path):
            raise MnistlabError(f"{self.config_path} not found: not a run folder of mnistlab train")
        config = read_json(self.config_path)
        if not isinstance(config, dict):
            raise MnistlabError(f"{self.config_path}: not a valid run configuration (not a JSON object)")
        return config

    def dataset(self, default="mnist"):
        """The dataset config.json names; `default` for a folder without one."""
        if not os.path.isfile(self.config_path):
            return default
        dataset = self.read_config().get("dataset") or default
        if not isinstance(dataset, str):
            raise MnistlabError(f"{self.config_path}: not a valid run configuration (dataset {dataset!r})")
        return dataset

    def read_history(self):
        return read_json(self.file(self.HISTORY), {})

    def read_metrics(self):
        return read_json(self.file(self.METRICS), {})

    def read_curve(self, metric):
        """accuracy.png's or loss.png's bytes, or None."""
        return read_bytes(self.curve_path(metric))

    def read_temperature(self):
        """temperature.json's temperature (a float > 0), or None for an uncalibrated run; a damaged
        file: one clear MnistlabError."""
        if not os.path.isfile(self.temperature_path):
            return None
        data = read_json(self.temperature_path)
        temperature = data.get("temperature") if isinstance(data, dict) else None
        if not is_temperature(temperature):
            raise MnistlabError(
                f"{self.temperature_path}: not a valid temperature (expected a positive number); "
                "run mnistlab calibrate again or delete the file"
            )
        return float(temperature)

    def require_model(self, to="calibrate"):
        """A clear MnistlabError unless this is a folder holding model.keras (`to`: what needs it)."""
        if not os.path.isdir(self.path):
            raise MnistlabError(f"{self.path}: no such run folder")
        if not os.path.isfile(self.model_path):
            raise MnistlabError(f"{self.path} holds no {self.MODEL}: {to} a run that mnistlab train has finished")

    def load_model(self, safe_mode=True, calibrated=False):
        """model.keras as trained; calibrated=True: with the folder's temperature attached, if any."""
        model = load_model_file(self.model_path, safe_mode=safe_mode)
        if calibrated:
            set_temperature(model, self.read_temperature())
        return model

    # -- checkpoints (crash safety: the new .npz first, then state.json naming it, the old one last)

    @writes
    def save_checkpoint(self, values, epoch, history, seconds=0.0):
        """A checkpoint of the arrays `values` after `epoch` finished epochs and `seconds` of training."""
        import numpy as np

        os.makedirs(self.checkpoint_dir, exist_ok=True)
        name = f"epoch-{epoch:04d}.npz"
        with atomic_path(os.path.join(self.checkpoint_dir, name), suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, *values)
        write_json(self.state_path, {"epoch": epoch, "file": name, "history": history, "seconds": seconds})
        for old in os.listdir(self.checkpoint_dir):
            if old.startswith("epoch-") and old != name:
                os.unlink(os.path.join(self.checkpoint_dir, old))

    def latest_checkpoint(self):
        """The last finished epoch's CheckpointState, or None when there is none."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path) as f:
                state = json.load(f)
            file = os.path.join(self.checkpoint_dir, state["file"])
            if not os.path.isfile(file):
                raise KeyError(state["file"])
            history = state["history"]
            if not isinstance(history, dict):
                raise TypeError("history is not a mapping")
            return CheckpointState(int(state["epoch"]), file, history, float(state.get("seconds", 0.0)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise self.damaged_checkpoint(e) from None

    def load_checkpoint(self, state):
        """The arrays of checkpoint `state`, in the order they were saved."""
        import numpy as np

        try:
            with np.load(state.path) as saved:
                return [saved[f"arr_{i}"] for i in range(len(saved.files))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise self.damaged_checkpoint(e) from None

    def damaged_checkpoint(self, why):
        return MnistlabError(
            f"{self.state_path}: damaged checkpoint ({why}); delete {self.checkpoint_dir} to start the run again"
        )

    @writes
    def remove_checkpoint(self):
        if os.path.isdir(self.checkpoint_dir):
            for name in os.listdir(self.checkpoint_dir):
                os.unlink(os.path.join(self.checkpoint_dir, name))
            os.rmdir(self.checkpoint_dir)


def load_model(path, safe_mode=True):
    """A .keras model (storage.model_file.load_model), or a run folder's model.keras with the folder's
    temperature (temperature.json, from mnistlab calibrate) attached for inference.predict_proba to
    apply: the one place a run's model is loaded for predict, evaluate, the report and the web app."""
    run = RunFolder.holding(model_path(path))
    if run is not None and os.path.isfile(run.model_path):
        return run.load_model(safe_mode=safe_mode, calibrated=True)
    return load_model_file(path, safe_mode=safe_mode)


def is_temperature(value) -> TypeGuard[float]:
    """A valid temperature: a finite number above 0 (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
