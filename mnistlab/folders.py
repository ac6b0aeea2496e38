"""The two folders mnistlab writes, and the one place that knows their files.

A run folder (`mnistlab train`)::

    config.json      the TrainConfig, plus the Keras backend and version; written first
    model.keras      the trained model
    history.json     per-epoch loss and accuracy, train and validation
    history.csv      the same as a table, one row per epoch
    metrics.json     test loss and accuracy, training time; its presence means "finished"
    accuracy.png     learning curves, drawn by mnistlab.training.curves
    loss.png
    report.html      mnistlab report
    tensorboard/     with --tensorboard: TensorBoard's event files (mnistlab.training.tracking)
    checkpoint/      while training runs: state.json naming the last epoch-NNNN.npz

A search folder (`mnistlab search`)::

    search.json      the search's settings, written when it starts
    fits/<hash>.json one record per finished (parameter set, fold) fit
    results.json     the table, written when it finishes; its presence means "finished"
    results.csv
    scores.png       drawn by mnistlab.search.plots
    best.json        the best parameters and the refit model's test metrics
    best_model.keras
    report.html
    tensorboard/     with --tensorboard: one TensorBoard run per parameter set

RunFolder and SearchFolder name every file, read and write each one (every
write atomic, through mnistlab.atomic), and turn a missing or damaged file
into one clear MnistlabError. This module sits at the bottom of the layers:
it imports mnistlab.atomic, mnistlab.errors and the plain-data TrainConfig,
and Keras only when a model is saved or loaded.
"""
import csv
import io
import json
import os
import warnings
import zipfile
from dataclasses import dataclass

from mnistlab.atomic import atomic_path, write_json, write_text
from mnistlab.errors import MnistlabError, first_line
from mnistlab.training.config import TrainConfig

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
CURVES = ("accuracy", "loss")
REPORT = "report.html"


# ----------------------------------------------------------------------------- shared helpers

def read_json(path, default=None):
    """A JSON file's content; `default` when it is absent, or an error when no default is given."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        if default is None:
            raise MnistlabError(f"{path}: missing")
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise MnistlabError(f"{path}: cannot read it as JSON ({e})") from None


def read_bytes(path):
    """A file's bytes, or None when it is absent."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_bytes(path, data, suffix=".part"):
    with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as f:
        f.write(data)


def prepare(path):
    """Create folder `path` up front, so an unwritable --out fails before any work is done."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise MnistlabError(f"cannot write to output folder {path}: {e.strerror or e}") from None
    return path


def save_model(model, path):
    """model.save to `path`, atomically (a kill leaves the old file or none, never half a file)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def model_path(path):
    """Accept a model file or a run folder holding model.keras."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = RunFolder(path).model_path
    return path


def load_model(path, safe_mode=True):
    """Load a .keras model (or a run folder's); a missing, damaged or unsafe file gives one clear MnistlabError."""
    path = model_path(path)
    if not os.path.isfile(path):
        raise MnistlabError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise MnistlabError(f"{path}: not a Keras model file (expected a .keras archive)")
    import mnistlab.backend  # noqa: F401  (the backend is chosen before Keras is imported)
    import keras

    try:
        with warnings.catch_warnings():
            # Keras warns when a model saved before training has no optimizer state: harmless here
            warnings.filterwarnings("ignore", message="Skipping variable loading", category=UserWarning)
            return keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as e:
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise MnistlabError(f"{path}: the model carries custom code, refused in safe mode; "
                                "load it with --unsafe only if you trust its source") from None
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None
    except Exception as e:  # keras raises many kinds for a damaged archive
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None


def folder_kind(path):
    """'search' (results.json) or 'run' (config.json); anything else is a clear error."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MnistlabError(f"{path}: no such folder")
    if SearchFolder.is_search(path):
        return "search"
    if RunFolder.is_run(path):
        return "run"
    raise MnistlabError(f"{path}: neither a run folder (config.json, model.keras) "
                        "nor a search folder (results.json)")


def history_csv(history):
    keys = [k for k in HISTORY_KEYS if k in history] + sorted(set(history) - set(HISTORY_KEYS))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch"] + keys)
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1] + [history[k][i] for k in keys])
    return buf.getvalue()


# ----------------------------------------------------------------------------- run folder

@dataclass
class CheckpointState:
    """A run folder's last finished epoch, as checkpoint/state.json names it."""
    epoch: int        # epochs finished
    path: str         # the .npz of weights and optimizer variables
    history: dict


class RunFolder:
    """One training run's folder (see the module's docstring for its files)."""

    CONFIG = "config.json"
    MODEL = "model.keras"
    HISTORY = "history.json"
    HISTORY_CSV = "history.csv"
    METRICS = "metrics.json"
    REPORT = REPORT
    CHECKPOINT = "checkpoint"
    STATE = "state.json"

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def config_path(self):
        return self.file(self.CONFIG)

    @property
    def model_path(self):
        return self.file(self.MODEL)

    @property
    def report_path(self):
        return self.file(self.REPORT)

    @property
    def checkpoint_dir(self):
        return self.file(self.CHECKPOINT)

    @property
    def state_path(self):
        return os.path.join(self.checkpoint_dir, self.STATE)

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

    def finished(self):
        """True once the run wrote its results (metrics.json comes with them)."""
        return os.path.exists(self.file(self.METRICS))

    # -- writing

    def prepare(self):
        """Create the folder, checking it is writable (one MnistlabError otherwise)."""
        prepare(self.path)
        return self

    def start(self, config):
        """Create the folder and write config.json before training, so --resume can rerun it."""
        self.prepare()
        self.guard(self.write_config, config)

    def write_config(self, config):
        import mnistlab.backend  # noqa: F401
        import keras

        write_json(self.config_path, config.to_dict() | {
            "backend": keras.backend.backend(), "keras_version": keras.__version__})

    def write_results(self, config, model, history, metrics, curves=None):
        """Everything a finished run leaves: the model, history, metrics, config and the curves
        (`curves` maps a metric to its PNG's bytes). start() made the folder and checked it."""
        def write():
            save_model(model, self.model_path)
            self.write_history(history)
            write_json(self.file(self.METRICS), metrics)
            self.write_config(config)
            for metric, png in (curves or {}).items():
                write_bytes(self.curve_path(metric), png, suffix=".png")

        self.guard(write)

    def write_history(self, history):
        write_json(self.file(self.HISTORY), history)
        write_text(self.file(self.HISTORY_CSV), history_csv(history))

    def guard(self, write, *args):
        try:
            write(*args)
        except OSError as e:
            raise MnistlabError(f"cannot write run folder {self.path}: {e.strerror or e}") from None

    # -- reading

    def read_config_dict(self):
        """config.json as written (the TrainConfig's fields plus backend and keras_version)."""
        if not os.path.isfile(self.config_path):
            raise MnistlabError(f"{self.config_path} not found: not a run folder of mnistlab train")
        config = read_json(self.config_path)
        if not isinstance(config, dict):
            raise MnistlabError(f"{self.config_path}: not a valid run configuration (not a JSON object)")
        return config

    def read_config(self):
        """config.json as a TrainConfig; missing or damaged: one clear MnistlabError."""
        config = self.read_config_dict()
        try:
            return TrainConfig.from_dict(config)
        except (ValueError, TypeError) as e:  # a UsageError too: the file is wrong, not the command
            raise MnistlabError(f"{self.config_path}: not a valid run configuration ({e})") from None

    def dataset(self, default="mnist"):
        """The dataset config.json names; `default` for a folder without one."""
        if not os.path.isfile(self.config_path):
            return default
        dataset = self.read_config_dict().get("dataset") or default
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

    def load_model(self, safe_mode=True):
        return load_model(self.model_path, safe_mode=safe_mode)

    # -- checkpoints (crash safety: the new .npz first, then state.json naming it, the old one last)

    def save_checkpoint(self, values, epoch, history):
        """A checkpoint of the arrays `values` after `epoch` finished epochs."""
        import numpy as np

        os.makedirs(self.checkpoint_dir, exist_ok=True)
        name = f"epoch-{epoch:04d}.npz"
        with atomic_path(os.path.join(self.checkpoint_dir, name), suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, *values)
        write_json(self.state_path, {"epoch": epoch, "file": name, "history": history})
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
            return CheckpointState(int(state["epoch"]), file, history)
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
        return MnistlabError(f"{self.state_path}: damaged checkpoint ({why}); delete "
                             f"{self.checkpoint_dir} to start the run again")

    def remove_checkpoint(self):
        if os.path.isdir(self.checkpoint_dir):
            for name in os.listdir(self.checkpoint_dir):
                os.unlink(os.path.join(self.checkpoint_dir, name))
            os.rmdir(self.checkpoint_dir)


# ----------------------------------------------------------------------------- search folder

class SearchFolder:
    """One search's folder (see the module's docstring for its files)."""

    SETTINGS = "search.json"
    RESULTS = "results.json"
    RESULTS_CSV = "results.csv"
    BEST = "best.json"
    BEST_MODEL = "best_model.keras"
    SCORES = "scores.png"
    RECORDS = "fits"
    REPORT = REPORT

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"SearchFolder({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def results_path(self):
        return self.file(self.RESULTS)

    @property
    def best_model_path(self):
        return self.file(self.BEST_MODEL)

    @property
    def scores_path(self):
        return self.file(self.SCORES)

    @property
    def report_path(self):
        return self.file(self.REPORT)

    @property
    def records_dir(self):
        return self.file(self.RECORDS)

    @staticmethod
    def is_search(path):
        """A folder holding results.json (a finished search)."""
        return os.path.isfile(os.path.join(os.fspath(path), SearchFolder.RESULTS))

    def finished(self):
        return os.path.exists(self.results_path)

    def prepare(self):
        prepare(self.path)
        return self

    # -- settings, results, best

    def write_settings(self, settings):
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file(self.SETTINGS), settings)

    def read_settings(self):
        """search.json's content, {} when it is absent; damaged: one clear MnistlabError."""
        return read_json(self.file(self.SETTINGS), {})

    def holds_settings(self, settings):
        """True when search.json exists, reads, and equals `settings` (a damaged one: False)."""
        try:
            with open(self.file(self.SETTINGS), encoding="utf-8") as f:
                return json.load(f) == settings
        except (OSError, ValueError):
            return False

    def write_results(self, rows, csv_text):
        """results.csv (the table as text, made by search.results) and results.json, each atomically."""
        write_text(self.file(self.RESULTS_CSV), csv_text)
        write_json(self.results_path, rows)

    def read_results(self):
        """results.json's rows; a missing, damaged or empty table is one clear MnistlabError."""
        rows = read_json(self.results_path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "params" in r for r in rows):
            raise MnistlabError(f"{self.results_path}: not a search's results table")
        if not rows:
            raise MnistlabError(f"{self.results_path}: the search has no results")
        return rows

    def write_best(self, best):
        write_json(self.file(self.BEST), best)

    def read_best(self):
        return read_json(self.file(self.BEST), {})

    def save_best_model(self, model):
        save_model(model, self.best_model_path)

    def save_scores(self, png):
        write_bytes(self.scores_path, png, suffix=".png")

    def read_scores(self):
        """scores.png's bytes, or None."""
        return read_bytes(self.scores_path)

    # -- fit records (fits/<key>.json; search.store decides the key and checks the content)

    def record_path(self, key):
        return os.path.join(self.records_dir, key + ".json")

    def load_record(self, key):
        """Record `key` as JSON, or None when it is absent or unreadable."""
        try:
            with open(self.record_path(key), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save_record(self, key, record):
        os.makedirs(self.records_dir, exist_ok=True)
        write_json(self.record_path(key), record)

    def count_records(self):
        try:
            return sum(name.endswith(".json") for name in os.listdir(self.records_dir))
        except FileNotFoundError:
            return 0
