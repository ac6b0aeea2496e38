"""The report's pictures as PNG bytes, ready to embed: heat maps, digit thumbnails, learning curves."""

import io

import numpy as np

# matplotlib's Figure, not pyplot: drawing files must not switch a notebook's plotting backend
from matplotlib.figure import Figure
from PIL import Image


def png_of(fig, dpi=100):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def confusion_heatmap(y_true, y_pred, labels, normalize=None, title=""):
    """scikit-learn's confusion-matrix display: counts, or shares of each true class (normalize='true')."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        display_labels=labels,
        normalize=normalize,
        values_format=".2f" if normalize else "d",
        cmap="Blues",
        colorbar=True,
        ax=ax,
        text_kw={"fontsize": 8},
    )
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45 if max(len(str(t)) for t in labels) > 2 else 0)
    fig.tight_layout()
    return png_of(fig)


def learning_curve_png(history, metric):
    """The run folder's learning-curve plot for `metric`, drawn by the same code that wrote it."""
    from mnistlab.training.curves import learning_curve_png as draw

    return draw(history, metric)


def digit_png(image):
    """A 28x28 uint8 digit as a small PNG, dark ink on light paper as the notebook shows digits."""
    return encode_png(255 - np.asarray(image, dtype=np.uint8))


def encode_png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
