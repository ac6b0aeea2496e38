"""Every run folder under a folder, as one table (`mnistlab runs`, mnistlab.list_runs).

    >>> import mnistlab
    >>> table = mnistlab.list_runs("runs", sort="accuracy", reverse=True)
    >>> print(table.text())          # or table.json(); in Jupyter the table shows itself

A folder that cannot be read (a damaged config.json or metrics.json, a finished run
without its model) is listed with what is wrong with it, never raised: one bad folder
does not hide the others. Reading goes through storage.RunFolder; models are not loaded.
"""

import datetime
import json
import os
from dataclasses import asdict, dataclass

from mnistlab.errors import MnistlabError
from mnistlab.storage import RunFolder, SearchFolder
from mnistlab.text import metric_text

# Files only a run folder holds: a folder with any of them but no config.json is a damaged run.
RUN_FILES = (RunFolder.CONFIG, RunFolder.METRICS, RunFolder.HISTORY, RunFolder.MODEL, RunFolder.CHECKPOINT)


@dataclass
class RunSummary:
    """One line of the table. status: finished, unfinished or damaged (problem says why)."""

    name: str
    path: str
    status: str
    problem: str | None = None
    date: str | None = None  # when the run last wrote its results (ISO 8601, local time)
    model: str | None = None
    dataset: str | None = None
    epochs: int | None = None  # epochs trained
    optimizer: str | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    train_seconds: float | None = None

    def as_dict(self):
        return asdict(self)


# column: (header, RunSummary field, text of a value)
COLUMNS = {
    "date": ("date", "date", lambda v: v.replace("T", " ")[:16]),
    "name": ("run", "name", str),
    "model": ("model", "model", str),
    "dataset": ("dataset", "dataset", str),
    "epochs": ("epochs", "epochs", str),
    "optimizer": ("optimizer", "optimizer", str),
    "accuracy": ("test accuracy", "test_accuracy", metric_text),
    "time": ("training s", "train_seconds", "{:.1f}".format),
}
SORT_KEYS = tuple(COLUMNS)


def find_runs(root):
    """Run folders (and folders that look like damaged ones) under `root`, `root` itself included."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MnistlabError(f"{root}: no such folder")
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        names = set(files) | set(subdirs)
        if SearchFolder.is_search(folder) or SearchFolder.SETTINGS in files:
            subdirs[:] = []  # a search's folder: its fits are records, not runs
        elif names & set(RUN_FILES):
            found.append(folder)
            subdirs[:] = []
    return found


def summarize(path, root=None):
    """The RunSummary of folder `path`; damage is reported in it, not raised."""
    folder = RunFolder(path)
    name = os.path.relpath(path, root) if root else os.path.basename(os.path.abspath(path))
    if name == ".":
        name = os.path.basename(os.path.abspath(path))
    summary = RunSummary(name=name, path=folder.path, status="finished")
    try:
        read_into(summary, folder)
    except MnistlabError as e:
        summary.status, summary.problem = "damaged", str(e).replace(folder.path + os.sep, "")
    return summary


def read_into(summary, folder):
    if not folder.is_run(folder.path):
        raise MnistlabError(f"{folder.CONFIG} missing")
    config = folder.read_config()
    summary.model, summary.dataset, summary.optimizer = (
        text_of(folder, config, key) for key in ("model", "dataset", "optimizer")
    )
    if not folder.finished():
        state = folder.latest_checkpoint()
        summary.status, summary.epochs = "unfinished", state.epoch if state else 0
        members = config.get("members")
        if isinstance(members, int) and members > 1:  # an ensemble: its members' folders tell
            done = sum(folder.member(i).finished() for i in range(members))
            progress = f"{done} of {members} members trained"
        else:
            progress = f"{summary.epochs} of {config.get('epochs', '?')} epochs checkpointed"
        summary.problem = f"{progress}; mnistlab train --resume {folder.path}"
        summary.date = modified(folder.state_path if state else folder.config_path)
        return
    metrics = folder.read_metrics()
    if not isinstance(metrics, dict):
        raise MnistlabError(f"{folder.METRICS}: not a JSON object")
    for key in ("test_accuracy", "test_loss", "train_seconds", "epochs"):  # named as the summary's fields
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MnistlabError(f"{folder.METRICS}: {key} is {value!r}, not a number")
        setattr(summary, key, value)
    if summary.test_accuracy is None:
        raise MnistlabError(f"{folder.METRICS}: no test_accuracy")
    if not os.path.isfile(folder.model_path):
        raise MnistlabError(f"{folder.MODEL} missing")
    summary.date = modified(folder.file(folder.METRICS))


def text_of(folder, config, key):
    value = config.get(key)
    if value is not None and not isinstance(value, str):
        raise MnistlabError(f"{folder.CONFIG}: {key} is {value!r}, not a name")
    return value


def modified(path):
    return datetime.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")


class RunTable(list):
    """RunSummary rows; text(), json() and, in Jupyter, an HTML table."""

    HEADERS = [header for header, _, _ in COLUMNS.values()] + ["status"]

    def cells(self, row):
        values = [getattr(row, field) for _, field, _ in COLUMNS.values()]
        cells = ["" if v is None else fmt(v) for v, (_, _, fmt) in zip(values, COLUMNS.values())]
        status = row.status if row.status == "finished" else f"{row.status}: {row.problem}"
        return cells + [status]

    def text(self, width=None):
        """The table for a terminal (`width` columns; None: as wide as it needs)."""
        import io

        from rich import box
        from rich.console import Console
        from rich.table import Table

        if not self:
            return "no run folders found"
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
        for i, header in enumerate(self.HEADERS):
            numeric = header in ("epochs", "test accuracy", "training s")
            table.add_column(header, justify="right" if numeric else "left", no_wrap=i < len(self.HEADERS) - 1)
        for row in self:
            table.add_row(*self.cells(row))
        buf = io.StringIO()
        Console(
            file=buf,
            width=width or 10_000,
            color_system=None,
            markup=False,
            emoji=False,
            highlight=False,
            force_jupyter=False,
        ).print(table)  # text, even in a notebook
        return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n")

    def __repr__(self):
        return self.text()

    def json(self):
        return json.dumps([row.as_dict() for row in self], indent=2)

    def _repr_html_(self):
        from mnistlab.report import markup

        return markup.table(self.HEADERS, [self.cells(row) for row in self], left=len(self.HEADERS))


def list_runs(root="runs", sort="date", reverse=False):
    """Every run folder under `root` as a RunTable, sorted by column `sort` (SORT_KEYS; rows
    without a value for it come last, whichever the order)."""
    if sort not in COLUMNS:
        raise MnistlabError(f"cannot sort by {sort!r}: choose one of {', '.join(SORT_KEYS)}")
    rows = [summarize(path, root) for path in find_runs(root)]
    field = COLUMNS[sort][1]
    present = sorted(
        (r for r in rows if getattr(r, field) is not None), key=lambda r: (getattr(r, field), r.name), reverse=reverse
    )
    return RunTable(present + sorted((r for r in rows if getattr(r, field) is None), key=lambda r: r.name))
