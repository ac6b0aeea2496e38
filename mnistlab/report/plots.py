"""The notebook's digit picture (`mnistlab show`). The learning curves live in
mnistlab.training.curves, the search's chart in mnistlab.search.plots."""

# matplotlib's Figure, not pyplot: drawing files must not switch a notebook's plotting backend
from matplotlib.figure import Figure

from mnistlab.storage.files import atomic_path


def show_digit(image, label, path, title=None):
    """One digit as the notebook's matshow, titled with its label."""
    fig = Figure(figsize=(3, 3), dpi=100)
    ax = fig.subplots()
    ax.matshow(image, cmap="binary")
    ax.set_title(title or f"label: {label}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
