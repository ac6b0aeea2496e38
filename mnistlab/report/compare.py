"""Several runs' learning curves on one figure, and a page about them (`mnistlab compare`).

    >>> import mnistlab
    >>> comparison = mnistlab.compare(["runs/dnn", "runs/cnn"])
    >>> comparison.save("compare.png"); comparison.write_report("compare.html")

Each run gets one colour: its validation (or test) curve solid, its training curve dashed.
An unfinished run is drawn up to its last checkpointed epoch.
"""

import json
import os
from dataclasses import dataclass

from mnistlab.errors import MnistlabError
from mnistlab.report import markup
from mnistlab.report.runs import RunTable, summarize
from mnistlab.storage import CURVES, RunFolder, cannot_write, write_bytes, write_text


@dataclass
class Comparison:
    names: list  # one short name per run, as the legend shows it
    histories: list  # per-epoch history of each run
    configs: list  # config.json of each run
    table: RunTable  # the runs as `mnistlab runs` lists them

    def figure_png(self):
        """The learning curves of every run: accuracy and loss side by side, as PNG bytes."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        from mnistlab.report.figures import png_of

        fig = Figure(figsize=(12, 4.4), dpi=100)
        axes = fig.subplots(1, len(CURVES), gridspec_kw=dict(left=0.06, right=0.98, bottom=0.12, top=0.9, wspace=0.2))
        for ax, metric in zip(axes, CURVES):
            for i, (name, history) in enumerate(zip(self.names, self.histories)):
                colour = f"C{i % 10}"
                epochs = range(1, len(history.get(metric, [])) + 1)
                if history.get("val_" + metric):
                    ax.plot(epochs, history["val_" + metric], color=colour, marker="o", label=name)
                if history.get(metric):
                    ax.plot(
                        epochs,
                        history[metric],
                        color=colour,
                        linestyle="--",
                        label=None if history.get("val_" + metric) else name,
                    )
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(metric)
            ax.set_title(f"{metric}: validation solid, training dashed")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=8)
        return png_of(fig)

    def __repr__(self):
        return f"Comparison({self.names})"

    def _repr_png_(self):
        return self.figure_png()

    def save(self, path):
        """The figure as a PNG file at `path`."""
        write_into(path, write_bytes, self.figure_png(), suffix=".png")
        return path

    def page(self):
        """The comparison as one self-contained HTML page."""
        sections = [
            (
                "curves",
                "Learning curves",  # one wide figure: not two abreast as .figs sets them
                markup.image(self.figure_png(), "accuracy and loss per epoch of every run"),
            ),
            ("runs", "Runs", self.table._repr_html_()),
            ("settings", "Settings that differ", differences(self.names, self.configs)),
        ]
        return markup.page(f"Comparing {len(self.names)} runs", ", ".join(self.names), sections)

    def write_report(self, path):
        write_into(path, write_text, self.page())
        return path


def write_into(path, write, content, **options):
    try:
        write(path, content, **options)
    except OSError as e:
        raise cannot_write(path, e) from None


def differences(names, configs):
    keys = sorted({k for c in configs for k in c if k not in ("data_dir",)})
    rows = [
        [key] + [value_text(c.get(key)) for c in configs]
        for key in keys
        if len({json.dumps(c.get(key), sort_keys=True) for c in configs}) > 1
    ]
    if not rows:
        return markup.paragraph("The runs' settings are all the same.")
    return markup.table(["setting"] + list(names), rows, left=len(names) + 1)


def value_text(value):
    return value if isinstance(value, str) else json.dumps(value)


def short_names(paths):
    """Folder names; paths relative to the runs' common folder where two names would clash."""
    names = [os.path.basename(os.path.abspath(p)) for p in paths]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath([os.path.abspath(p) for p in paths])
    return [
        os.path.relpath(os.path.abspath(p), common) if os.path.abspath(p) != common else n for p, n in zip(paths, names)
    ]


def history_of(folder):
    """The run's per-epoch history: history.json, or the last checkpoint's while it trains."""
    history = folder.read_history()
    if not history and not folder.finished():
        state = folder.latest_checkpoint()
        history = state.history if state else {}
    if not isinstance(history, dict) or not any(history.get(m) for m in CURVES):
        raise MnistlabError(f"{folder.path}: no per-epoch history to draw (no epoch finished yet?)")
    return history


def compare(runs):
    """A Comparison of the run folders `runs` (paths, or Run objects trained with out=)."""
    paths = [getattr(run, "out", run) for run in runs]
    if not paths:
        raise MnistlabError("compare needs at least one run folder")
    folders = []
    for path in paths:
        if path is None:
            raise MnistlabError("compare needs run folders: train with out=... to keep one")
        folder = RunFolder(path)
        if not os.path.isdir(folder.path):
            raise MnistlabError(f"{folder.path}: no such folder")
        if not folder.is_run(folder.path):
            raise MnistlabError(f"{folder.path}: not a run folder (no {folder.CONFIG})")
        folders.append(folder)
    histories = [history_of(folder) for folder in folders]
    configs = [folder.read_config() for folder in folders]
    names = short_names([folder.path for folder in folders])
    table = RunTable(summarize(folder.path) for folder in folders)
    for row, name in zip(table, names):
        row.name = name
    return Comparison(names, histories, configs, table)
