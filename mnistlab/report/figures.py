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


def unit_image(image):
    """A 28x28 digit as floats in [0, 1] (uint8-range values divided by 255)."""
    image = np.asarray(image, dtype=np.float32).reshape(28, 28)
    return image / 255 if image.max() > 1 else image


def draw_map(ax, image, attributions):
    """explain's attributions on `ax` over the digit in grey: red for the answer, blue against it, on a
    symmetric scale (white is no contribution); returns the map's AxesImage (for a colour bar)."""
    heat = np.asarray(attributions, dtype=np.float32).reshape(28, 28)
    limit = float(np.abs(heat).max()) or 1.0
    ax.imshow(unit_image(image), cmap="binary", vmin=0, vmax=1, alpha=0.35)
    return ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.8)


def explanation_png(image, attributions, probabilities, top=3, title=""):
    """One answer explained, three panels: the 28x28 input as the model saw it, the saliency map
    (explain's attributions: red for the answer, blue against it, over the digit in grey) and the
    `top` most likely classes' probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")[:top]

    fig = Figure(figsize=(9, 3.2))
    digit, heat, bars = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.1]})
    digit.imshow(unit_image(image), cmap="binary", vmin=0, vmax=1)
    digit.set_title("input")
    shown = draw_map(heat, image, attributions)
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


PANEL_GAP = 4  # pixels of grey between the panels of filters_png
PANEL_GREY = 200  # their colour: never one of the "bwr" colour map's, each of which has a channel at 255


def filters_png(kernels, scale, columns=8):
    """Filters as a grid of small square panels, one per (side, side) array of `kernels`: each drawn
    with its own symmetric scale (red positive, blue negative, white zero), `scale` screen pixels per
    weight, PANEL_GAP grey pixels between panels (so that the panels can be counted in the picture)."""
    from matplotlib import colormaps

    kernels = np.asarray(kernels, np.float32)
    n, side = len(kernels), kernels.shape[1]
    columns = min(columns, n)
    rows = -(-n // columns)
    cell = side * scale + PANEL_GAP
    mosaic = np.full((rows * cell + PANEL_GAP, columns * cell + PANEL_GAP, 3), PANEL_GREY, np.uint8)
    paint = colormaps["bwr"]
    for k, kernel in enumerate(kernels):
        limit = float(np.abs(kernel).max()) or 1.0
        rgb = (paint(0.5 + 0.5 * kernel / limit)[..., :3] * 255).round().astype(np.uint8)
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = PANEL_GAP + (k // columns) * cell, PANEL_GAP + (k % columns) * cell
        mosaic[top : top + side * scale, left : left + side * scale] = rgb
    return encode_png(mosaic)


def embedding_png(points, labels, wrong, names, title=""):
    """A 2-D map of images: `points` (n, 2) coloured by true label, the `wrong` ones (a boolean mask)
    marked with a black x."""
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    paint = [f"C{k % 10}" for k in range(len(names))]
    for k, name in enumerate(names):
        mine = labels == k
        ax.scatter(points[mine, 0], points[mine, 1], s=5, color=paint[k], alpha=0.6, label=str(name), linewidths=0)
    ax.scatter(points[wrong, 0], points[wrong, 1], s=14, color="black", marker="x", linewidths=0.8, label="mistake")
    ax.legend(fontsize=7, markerscale=2, loc="best", ncols=2)
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_title(title)
    fig.tight_layout()
    return png_of(fig)


def reliability_png(curves, bins):
    """The reliability diagram: for each (label, accuracy, confidence) of `curves` (the non-empty
    bins of calibration.reliability_curve), accuracy against mean confidence, with the diagonal of a
    perfectly calibrated model."""
    fig = Figure(figsize=(5.6, 5.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for (label, accuracy, confidence), style in zip(curves, ("o-", "s-")):
        ax.plot(confidence, accuracy, style, markersize=4, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"confidence in the top class (mean of each of {bins} bins)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("reliability diagram")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_of(fig)


def explanations_png(images, attributions, titles):
    """Several answers explained in one figure, a column each: the 28x28 input above, its saliency map
    (explain's attributions, red for the answer, blue against it, over the digit in grey) below; the
    compact, faster form of explanation_png for a row of them."""
    n = len(images)
    fig = Figure(figsize=(1.6 * n, 3.7))
    axes = np.asarray(fig.subplots(2, n, squeeze=False))
    for k in range(n):
        axes[0, k].imshow(unit_image(images[k]), cmap="binary", vmin=0, vmax=1)
        axes[0, k].set_title(titles[k], fontsize=9)
        draw_map(axes[1, k], images[k], attributions[k])
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("integrated gradients")
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.02, wspace=0.08, hspace=0.12)
    return png_of(fig)
