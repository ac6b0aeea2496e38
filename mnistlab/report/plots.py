"""The notebook's learning-curve plots: train and test accuracy (or loss) against epoch."""
import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from mnistlab.atomic import atomic_path  # noqa: E402


def learning_curve(history, metric, path):
    """Write `metric` and `val_<metric>` per epoch to a PNG at `path`."""
    # Fixed margins that fit the labels: tight_layout would draw the figure once more to measure them.
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100, gridspec_kw=dict(left=0.12, right=0.97, bottom=0.12, top=0.92))
    epochs = range(1, len(history[metric]) + 1)
    ax.plot(epochs, history[metric], marker="o", label="train")
    if history.get("val_" + metric):
        ax.plot(epochs, history["val_" + metric], marker="o", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"model {metric}")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def show_digit(image, label, path, title=None):
    """One digit as the notebook's matshow, titled with its label."""
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.matshow(image, cmap="binary")
    ax.set_title(title or f"label: {label}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
