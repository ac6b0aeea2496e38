"""The report's pictures as PNG bytes, ready to embed: heat maps, digit thumbnails, learning curves,
saliency maps (explanation_png)."""

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


def explanation_png(image, attributions, probabilities, top=3, title=""):
    """One answer explained, three panels: the 28x28 input as the model saw it, the saliency map
    (explain's attributions: red for the answer, blue against it, over the digit in grey) and the
    `top` most likely classes' probabilities."""
    image = np.asarray(image, dtype=np.float32).reshape(28, 28)
    image = image / 255 if image.max() > 1 else image
    attributions = np.asarray(attributions, dtype=np.float32).reshape(28, 28)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")[:top]
    limit = float(np.abs(attributions).max()) or 1.0  # a symmetric scale: white is no contribution

    fig = Figure(figsize=(9, 3.2))
    digit, heat, bars = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.1]})
    digit.imshow(image, cmap="binary", vmin=0, vmax=1)
    digit.set_title("input")
    heat.imshow(image, cmap="binary", vmin=0, vmax=1, alpha=0.35)
    shown = heat.imshow(attributions, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.8)
    heat.set_title(f"why {order[0]}: integrated gradients")
    fig.colorbar(shown, ax=heat, fraction=0.046, pad=0.04)
    for ax in (digit, heat):
        ax.set_xticks([])
        ax.set_yticks([])
    rows = np.arange(len(order))[::-1]
    bars.barh(rows, probabilities[order], color=["tab:red"] + ["tab:grey"] * (len(order) - 1))
    bars.set_yticks(rows, [str(k) for k in order])
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability")
    bars.set_title(f"top {len(order)}")
    for row, k in zip(rows, order):
        bars.text(min(probabilities[k] + 0.02, 0.75), row, f"{probabilities[k]:.4f}", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return png_of(fig)
