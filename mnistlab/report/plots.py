"""The notebook's digit picture (`mnistlab show`). The learning curves live in
mnistlab.training.curves, the search's chart in mnistlab.search.plots."""
import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from mnistlab.atomic import atomic_path  # noqa: E402


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
