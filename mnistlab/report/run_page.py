"""The report of one training run: how it learned, how it scores on the test
set, where it errs, what the model is and how it was configured."""

import json
import os
from typing import Any

import numpy as np

from mnistlab.report import figures, insight, markup
from mnistlab.storage import CURVES, RunFolder
from mnistlab.text import metric_text

GALLERY = 60  # misclassified digits shown, most confident mistakes first
PAIRS = 10  # most confused pairs listed


def run_page(folder, model=None, dataset=None, data_dir=None, safe_mode=True, gallery=GALLERY):
    """(title, subtitle, sections) for the run folder `folder`.

    `model` and `dataset` spare loading them again when the caller holds them
    (as `mnistlab train --report` does); otherwise they come from the folder
    (model.keras) and from config.json's dataset.
    """
    from mnistlab.data import load_dataset
    from mnistlab.inference import predict
    from mnistlab.storage import load_model

    run = RunFolder(folder)
    config = run.read_config()
    history = run.read_history()
    metrics = run.read_metrics()
    if model is None:
        model = load_model(folder, safe_mode=safe_mode)
    if dataset is None:
        dataset = load_dataset(
            config.get("dataset", "mnist"), data_dir or config.get("data_dir"), verify=config.get("verify_data", True)
        )
    probabilities = predict(model, dataset.x_test)
    y, pred = dataset.y_test.astype(int), probabilities.argmax(axis=1)
    names = list(dataset.classes)

    sections = [
        ("summary", "Test results", summary(metrics, y, pred, probabilities)),
        ("curves", "Learning curves", curves(run, history)),
        ("confusion", "Confusion matrix", confusion(y, pred, names)),
        ("per-class", "Per-class precision, recall and F1", per_class(y, pred, names)),
        ("pairs", "Most confused pairs", confused_pairs(y, pred, names)),
        ("mistakes", "Misclassified test digits", mistakes(dataset.x_test, y, pred, probabilities, names, gallery)),
        *insight.sections(model, dataset.x_test, y, probabilities, names),
        ("model", "Model", layers(model)),
        ("config", "Configuration", configuration(config)),
    ]
    epochs = metrics.get("epochs", config.get("epochs", "?"))
    subtitle = (
        f"{config.get('model', '?')} on {config.get('dataset', '?')}: "
        f"{epochs} epoch{'' if epochs == 1 else 's'}, batch {config.get('batch_size', '?')}, "
        f"{config.get('optimizer', '?')}; Keras {config.get('keras_version', '?')} "
        f"({config.get('backend', '?')} backend)"
    )
    return f"Run {os.path.basename(os.path.abspath(folder))}", subtitle, sections


def summary(metrics, y, pred, probabilities):
    from sklearn.metrics import accuracy_score, log_loss

    # The run's recorded figures when it has them; the same ones recomputed otherwise.
    accuracy = metrics.get("test_accuracy", accuracy_score(y, pred))
    loss = metrics.get("test_loss", log_loss(y, probabilities, labels=list(range(probabilities.shape[1]))))
    items = [
        (metric_text(accuracy), "test accuracy"),
        (metric_text(loss), "test loss"),
        (f"{int((pred != y).sum())} / {len(y)}", "test images misclassified"),
    ]
    if "tta_test_accuracy" in metrics:
        from mnistlab.inference import tta_copies

        items.insert(
            1,
            (
                metric_text(metrics["tta_test_accuracy"]),
                f"test accuracy with test-time augmentation ({tta_copies(metrics)} copies)",
            ),
        )
    if "train_seconds" in metrics:
        items.append((f"{metrics['train_seconds']:.1f} s", "training time"))
    return markup.cards(items)


def curves(run, history, width=None):
    """The run folder's accuracy.png and loss.png (drawn from `history` where missing, or for
    run None: a run trained without a folder)."""
    imgs = []
    for metric in CURVES:
        png = run.read_curve(metric) if run else None
        if png is None and history.get(metric):
            png = figures.learning_curve_png(history, metric)
        if png is not None:
            imgs.append(markup.image(png, f"{metric} per epoch, train and test", width))
    if not imgs:
        return markup.paragraph("This run recorded no per-epoch history.")
    return markup.figures(*imgs)


def confusion(y, pred, names):
    short = [n if len(n) <= 8 else n[:7] + "." for n in names]
    return markup.figures(
        markup.image(
            figures.confusion_heatmap(y, pred, short, title="counts"),
            "confusion matrix, counts: rows true class, columns predicted class",
        ),
        markup.image(
            figures.confusion_heatmap(y, pred, short, normalize="true", title="share of each true class"),
            "confusion matrix normalized by row: rows true class, columns predicted class",
        ),
    )


def per_class(y, pred, names):
    from sklearn import metrics

    # Any: pyright infers scikit-learn's types from its code, not its documentation: zero_division a
    # str (from its default "warn"; 0 is documented), the per-class scores floats rather than arrays.
    scores: Any = metrics.precision_recall_fscore_support
    labels = list(range(len(names)))
    precision, recall, f1, support = scores(y, pred, labels=labels, zero_division=0)
    rows = [(names[k], *map(metric_text, (precision[k], recall[k], f1[k])), int(support[k])) for k in labels]
    for average in ("macro", "weighted"):
        p, r, f, _ = scores(y, pred, labels=labels, average=average, zero_division=0)
        rows.append((f"{average} average", *map(metric_text, (p, r, f)), int(support.sum())))
    return markup.table(("class", "precision", "recall", "F1", "test images"), rows)


def confused_pairs(y, pred, names, top=PAIRS):
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=list(range(len(names))))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:top]
    rows = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        rows.append((names[t], names[p], int(cm[t, p]), f"{cm[t, p] / cm[t].sum():.2%}", int(cm[p, t])))
    if not rows:
        return markup.paragraph("No test image was misclassified.")
    return markup.table(
        ("true", "predicted as", "times", "share of the true class", "the other way round"), rows, left=2
    )


def mistakes(x, y, pred, probabilities, names, limit):
    wrong = np.nonzero(pred != y)[0]
    confidence = probabilities[np.arange(len(pred)), pred]
    shown = insight.most_confident_mistakes(y, pred, probabilities, limit)
    if not len(shown):
        return markup.paragraph("No test image was misclassified.")
    note = markup.paragraph(
        f"The {len(shown)} most confident of {len(wrong)} mistakes: test index, true label, "
        "predicted label and the model's confidence in it."
    )
    return note + markup.gallery(
        (
            figures.digit_png(x[i]),
            f"test image {i}: true {names[y[i]]}, predicted {names[pred[i]]}",
            (f"#{i}", f"true {names[y[i]]}", f"pred {names[pred[i]]}", f"{confidence[i]:.1%}"),
            2,
        )
        for i in shown
    )


def layers(model):
    rows = []
    for layer in model.layers:
        shape = getattr(getattr(layer, "output", None), "shape", None)
        rows.append(
            (
                layer.name,
                type(layer).__name__,
                str(tuple(shape)) if shape is not None else "",
                f"{layer.count_params():,}",
            )
        )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    head = markup.cards(
        [
            (f"{total:,}", "parameters"),
            (f"{trainable:,}", "trainable"),
            (f"{total - trainable:,}", "non-trainable"),
            (str(tuple(model.input_shape[1:])), "input shape"),
        ]
    )
    return head + markup.table(("layer", "type", "output shape", "parameters"), rows, left=2)


def configuration(config):
    rows = [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in config.items()]
    return markup.table(("setting", "value"), rows, left=2)
