"""The notebook's learning-curve plots: train and test accuracy (or loss) against epoch,
as the PNG bytes a run folder's accuracy.png and loss.png hold."""

import io

# matplotlib's Figure, not pyplot: drawing files must not switch a notebook's plotting backend
from matplotlib.figure import Figure

from mnistlab.storage import CURVES


def learning_curve_png(history, metric):
    """`metric` and `val_<metric>` per epoch, drawn as a PNG (bytes)."""
    # Fixed margins that fit the labels: tight_layout would draw the figure once more to measure them.
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots(gridspec_kw=dict(left=0.12, right=0.97, bottom=0.12, top=0.92))
    epochs = range(1, len(history[metric]) + 1)
    ax.plot(epochs, history[metric], marker="o", label="train")
    if history.get("val_" + metric):
        ax.plot(epochs, history["val_" + metric], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"model {metric}")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def learning_curves(history):
    """{metric: PNG bytes} for each of accuracy and loss that `history` records."""
    return {metric: learning_curve_png(history, metric) for metric in CURVES if history.get(metric)}
