"""The report's look inside a model (issue 27), for the run page and the notebook display alike:

    why(...)       "Why this answer": integrated-gradients maps (mnistlab.explain) of a few mistakes
    trust(...)     "How far to trust it": the reliability diagram, the calibration error and the log-loss,
                   before and after the run folder's temperature when it has one
    learned(...)   "What it learned": the first layer's filters, and a PCA map of the last hidden layer

sections(...) gives the three as (id, heading, inner HTML). Each costs a fraction of a second on the
notebook DNN: a fixed subset of the test set, few integration steps, small figures.
"""

import numpy as np

from mnistlab import calibration
from mnistlab.report import figures, markup
from mnistlab.text import metric_text

EXPLAINED = 6  # mistakes explained, the most confident first (the gallery's first)
STEPS = 16  # integrated gradients' steps: enough for maps that look settled, few for speed
MAPPED = 2000  # test images on the hidden layer's map: the first ones, a fixed subset
DENSE_UNITS = 16  # units of a dense first layer shown as 28x28 pictures
CONV_FILTERS = 32  # at most this many of a first convolution's kernels shown
SECTIONS = {"why": "Why this answer", "trust": "How far to trust it", "learned": "What it learned"}


def sections(model, x, y, probabilities, names):
    """(id, heading, inner HTML) of the three sections for `model`'s test `probabilities` (as
    inference.predict gives them: calibrated when the model carries a temperature) of images `x`,
    true labels `y`."""
    pred = probabilities.argmax(axis=1)
    inner = {
        "why": why(model, x, y, pred, probabilities, names),
        "trust": trust(model, x, y, probabilities),
        "learned": learned(model, x, y, pred, names),
    }
    return [(sid, heading, inner[sid]) for sid, heading in SECTIONS.items()]


def most_confident_mistakes(y, pred, probabilities, limit):
    """Indices of the misclassified images, the most confident first (the order of the mistakes gallery)."""
    wrong = np.nonzero(pred != y)[0]
    confidence = probabilities[np.arange(len(pred)), pred]
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]


def why(model, x, y, pred, probabilities, names, count=EXPLAINED, steps=STEPS):
    from mnistlab.explain import explain

    shown = most_confident_mistakes(y, pred, probabilities, count)
    if not len(shown):
        return markup.paragraph("No test image was misclassified.")
    maps = explain(model, x[shown], steps=steps, target=pred[shown])
    note = markup.paragraph(
        f"Integrated gradients ({steps} steps from a black image) of the {len(shown)} most confident mistakes: "
        "which pixels raised (red) or lowered (blue) the probability of the wrong answer. Each is captioned "
        "test index: true label as predicted label, and the model's confidence in it."
    )
    titles = [f"#{i}: {names[y[i]]} as {names[pred[i]]}\n{probabilities[i, pred[i]]:.1%}" for i in shown]
    png = figures.explanations_png(x[shown], maps, titles)
    alt = "integrated gradients of test images " + ", ".join(
        f"{i} (true {names[y[i]]}, predicted {names[pred[i]]})" for i in shown
    )
    return note + markup.figures(markup.image(png, alt))


def trust(model, x, y, probabilities):
    """The reliability diagram and the calibration figures; before and after the temperature storage
    attached to the model, if any (the predicted classes are the same either way)."""
    from mnistlab.inference import predict_proba
    from mnistlab.storage.model_file import temperature_of

    temperature = temperature_of(model)
    if temperature is None:
        stages = [("this model", probabilities)]
    else:
        raw = predict_proba(model, x, calibrated=False)
        stages = [("before calibration", raw), (f"after calibration (T = {temperature:.3f})", probabilities)]
    items, curves = [], []
    for label, p in stages:
        suffix = "" if temperature is None else f", {label.split(' (')[0]}"
        items.append((metric_text(calibration.expected_calibration_error(p, y)), f"expected calibration error{suffix}"))
        items.append((metric_text(calibration.log_loss(p, y)), f"test log-loss{suffix}"))
        accuracy, confidence = calibration.reliability_curve(p, y)
        curves.append((label, accuracy, confidence))
    if temperature is not None:
        items.append((f"{temperature:.3f}", "temperature"))
    note = markup.paragraph(
        f"Top-class calibration over {calibration.BINS} equal confidence bins: a calibrated model's points lie on "
        "the diagonal; below it the model is overconfident. The expected calibration error weighs each bin's "
        "gap by its share of the test images."
    )
    diagram = markup.image(
        figures.reliability_png(curves, calibration.BINS), "reliability diagram: accuracy against confidence per bin"
    )
    return markup.cards(items) + note + markup.figures(diagram)


def learned(model, x, y, pred, names):
    return filters(model) + hidden_map(model, x, y, pred, names)


def weighted_layers(model):
    """The layers holding weights, in order, nested models' layers in place of the models."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from weighted_layers(layer)
        elif layer.weights:
            yield layer


def first_filters(model):
    """(kernels (n, side, side), scale, caption) of the first weighted layer, or (None, None, note)
    when it is neither a one-channel Conv2D nor a Dense layer on the 784 pixels."""
    import keras

    first = next(weighted_layers(model), None)
    if isinstance(first, keras.layers.Conv2D):
        kernel = np.asarray(first.kernel)  # (height, width, channels in, filters)
        if kernel.shape[2] == 1 and kernel.shape[0] == kernel.shape[1]:
            shown = min(kernel.shape[3], CONV_FILTERS)
            kernels = np.moveaxis(kernel[:, :, 0, :shown], -1, 0)
            caption = (
                f"The first {shown} of the {kernel.shape[3]} kernels"
                if shown < kernel.shape[3]
                else f"All {shown} kernels"
            )
            return kernels, max(1, 60 // kernel.shape[0]), f"{caption} of the first convolution ({first.name})"
    elif isinstance(first, keras.layers.Dense):
        kernel = np.asarray(first.kernel)  # (inputs, units)
        if kernel.shape[0] == 28 * 28:
            shown = min(kernel.shape[1], DENSE_UNITS)
            kernels = kernel[:, :shown].T.reshape(shown, 28, 28)
            return kernels, 3, f"The weights of the first {shown} of the {kernel.shape[1]} units of {first.name}"
    name = "no layer with weights" if first is None else f"{type(first).__name__} {first.name}"
    return None, None, f"No filters shown: the first layer with weights ({name}) is neither a convolution nor dense."


def filters(model):
    kernels, scale, caption = first_filters(model)
    if kernels is None:
        return markup.paragraph(caption)
    return markup.paragraph(
        f"{caption}, one panel each, as pictures: red weights add to the unit's input where the digit has ink, "
        "blue ones subtract; each panel has its own scale."
    ) + markup.figures(markup.image(figures.filters_png(kernels, scale), f"{len(kernels)} first-layer filters"))


def last_dense(model):
    import keras

    dense = [layer for layer in weighted_layers(model) if isinstance(layer, keras.layers.Dense)]
    return dense[-1] if dense else None


def holder(model, layer):
    """The model, or the model nested in it, whose own layers include `layer` (None: neither)."""
    for inner in model.layers:
        if inner is layer:
            return model
        if hasattr(inner, "layers") and (found := holder(inner, layer)):
            return found
    return None


def hidden_features(model, x):
    """The input of the model's last Dense layer (its last hidden layer) for images `x`, (n, features),
    from a Keras sub-model; None when the model has no Dense layer."""
    import keras

    from mnistlab.data.preprocess import for_input
    from mnistlab.inference import Forward

    layer = last_dense(model)
    if layer is None:
        return None
    inputs = (holder(model, layer) or model).inputs  # an ensemble's: its last member's
    sub = keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer.input)
    pixels = for_input(x, model)
    forward = Forward(sub)  # one jitted program: called eagerly, the sub-model compiles op by op (0.5 s)
    out = [np.asarray(forward(pixels[s : s + 1000])) for s in range(0, len(pixels), 1000)]
    return np.concatenate(out).reshape(len(pixels), -1)


def hidden_map(model, x, y, pred, names, count=MAPPED):
    from sklearn.decomposition import PCA

    n = min(count, len(x))
    features = hidden_features(model, x[:n])
    if features is None or n < 3:
        return markup.paragraph(
            "No map of the last hidden layer: the model has no Dense layer, or too few test images."
        )
    points = PCA(n_components=2, svd_solver="full").fit_transform(features)
    wrong = pred[:n] != y[:n]
    note = markup.paragraph(
        f"The first {n} test images in the last hidden layer (the {features.shape[1]} inputs of the final "
        f"Dense layer), projected to 2-D by PCA (linear and deterministic), coloured by true label; "
        f"the {int(wrong.sum())} mistakes among them marked with a black x."
    )
    png = figures.embedding_png(points, y[:n], wrong, names, title="last hidden layer, PCA")
    return note + markup.figures(markup.image(png, "PCA map of the last hidden layer, by true label"))
