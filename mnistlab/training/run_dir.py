"""The run folder: everything a run produced, each file written atomically."""
import csv
import io
import os

import keras

from mnistlab.atomic import atomic_path, write_json, write_text
from mnistlab.errors import MnistlabError
from mnistlab.report.plots import learning_curve

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def prepare_out(out):
    """Create the run folder up front, so an unwritable --out fails before training."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise MnistlabError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    return out


def history_csv(history):
    keys = [k for k in HISTORY_KEYS if k in history] + sorted(set(history) - set(HISTORY_KEYS))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch"] + keys)
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1] + [history[k][i] for k in keys])
    return buf.getvalue()


def save_model(model, path):
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_config(out, config):
    write_json(os.path.join(out, "config.json"), config.to_dict() | {
        "backend": keras.backend.backend(), "keras_version": keras.__version__})


def start_run(out, config):
    """Create the run folder and write config.json before training, so --resume can rerun it."""
    prepare_out(out)
    try:
        write_config(out, config)
    except OSError as e:
        raise MnistlabError(f"cannot write run folder {out}: {e.strerror or e}") from None


def write_run(run):
    """The run's results; start_run made the folder and checked it before training."""
    out = run.out
    try:
        save_model(run.model, os.path.join(out, "model.keras"))
        write_json(os.path.join(out, "history.json"), run.history)
        write_text(os.path.join(out, "history.csv"), history_csv(run.history))
        write_json(os.path.join(out, "metrics.json"), run.metrics)
        write_config(out, run.config)
        for metric in ("accuracy", "loss"):
            if metric in run.history:
                learning_curve(run.history, metric, os.path.join(out, metric + ".png"))
    except OSError as e:
        raise MnistlabError(f"cannot write run folder {out}: {e.strerror or e}") from None
