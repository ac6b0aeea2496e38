"""How far to trust a model's probabilities: temperature scaling and the calibration error.

The models end in a softmax, so the log of their probabilities is their logits up to a constant
per image; temperature scaling divides those by one number T > 0 and takes the softmax again:

    fit_temperature(p, y)                  the T minimising the negative log-likelihood of labels y
    apply_temperature(p, T)                softmax(log(p) / T): T > 1 softens, T < 1 sharpens
    expected_calibration_error(p, y)       top-class ECE: |accuracy - confidence| over 15 bins, weighted
    reliability_curve(p, y)                (accuracy, confidence) per bin (sklearn's calibration_curve)
    log_loss(p, y)                         the mean negative log-likelihood (sklearn's log_loss)
    calibration_scores(p, y, T)            metrics.json's figures for the test set, before and after T
    evaluation_scores(losses, p, y)        test loss and accuracy averaged as Keras' model.evaluate averages

Dividing by T keeps each image's ranking of the classes, so the predicted classes (argmax) and the
accuracy never change: only the confidence does. mnistlab.training.calibrate fits T for a run folder
and stores it; mnistlab.inference.predict_proba applies a loaded run's T (storage.temperature_of).
scipy and scikit-learn are imported inside the functions that use them.
"""

import numpy as np

BINS = 15  # the usual number of confidence bins for the ECE (Guo et al., 2017)
BOUNDS = (0.05, 20.0)  # the temperatures searched: far beyond any a trained network needs
TINY = 1e-12  # probabilities are clipped here before the log (a softmax's zeros are underflow)


def log_probabilities(probabilities):
    """log(p), clipped away from log(0), in float64: the logits up to a constant per row."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), TINY, None))


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits, labels, temperature):
    """Mean negative log-likelihood of integer `labels` under softmax(logits / temperature)."""
    scaled = _log_softmax(logits / temperature)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def fit_temperature(probabilities, labels, bounds=BOUNDS):
    """The temperature T > 0 minimising the negative log-likelihood of softmax(log(p) / T) for
    integer `labels`: a bounded scalar minimisation over log T (scipy.optimize.minimize_scalar)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one labelled image")
    logits = log_probabilities(probabilities)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, np.exp(log_t)),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def apply_temperature(probabilities, temperature):
    """softmax(log(p) / temperature), as float32 (the dtype predict_proba gives); T = 1: p itself."""
    probabilities = np.asarray(probabilities)
    if temperature == 1 or not len(probabilities):
        return probabilities
    return np.exp(_log_softmax(log_probabilities(probabilities) / temperature)).astype(np.float32)


def _top_class(probabilities, labels):
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    return confidence, correct


def expected_calibration_error(probabilities, labels, bins=BINS):
    """Top-class ECE: the images binned by their top probability (`bins` equal widths over [0, 1]),
    each bin's |accuracy - mean confidence| weighted by its share of the images."""
    confidence, correct = _top_class(probabilities, labels)
    if not len(confidence):
        return float("nan")
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins]
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, correct, bins) - np.bincount(which, confidence, bins))
    return float(gap.sum() / counts.sum())


def reliability_curve(probabilities, labels, bins=BINS):
    """(accuracy, mean confidence) of each non-empty bin of top probabilities: the reliability diagram's
    points (sklearn.calibration.calibration_curve on whether the top class is right)."""
    from sklearn.calibration import calibration_curve

    confidence, correct = _top_class(probabilities, labels)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    return accuracy, mean_confidence


def log_loss(probabilities, labels):
    """Mean negative log-likelihood of integer `labels` (sklearn.metrics.log_loss, each row renormalised
    in float64 so that float32 rounding does not make it warn)."""
    from sklearn.metrics import log_loss as sklearn_log_loss

    p = np.clip(np.asarray(probabilities, np.float64), TINY, None)
    p /= p.sum(axis=1, keepdims=True)
    return float(sklearn_log_loss(np.asarray(labels), p, labels=np.arange(p.shape[1])))


def calibration_scores(probabilities, labels, temperature):
    """metrics.json's calibration figures for test probabilities `probabilities` (uncalibrated) and
    their labels: the ECE and log-loss before and after `temperature`, and the temperature."""
    calibrated = apply_temperature(probabilities, temperature)
    return {
        "temperature": round(float(temperature), 6),
        "calibration_error": expected_calibration_error(probabilities, labels),
        "calibration_error_calibrated": expected_calibration_error(calibrated, labels),
        "test_log_loss": log_loss(probabilities, labels),
        "test_log_loss_calibrated": log_loss(calibrated, labels),
    }


def evaluation_scores(losses, probabilities, y, batch_size):
    """{"test_loss", "test_accuracy"} as Keras' model.evaluate reports them: per-image `losses` averaged
    batch by batch (each batch's float32 mean, weighted by its size), and the argmax accuracy of
    `probabilities` for integer labels `y`. Shared by inference.evaluate (Keras' crossentropy) and the
    ONNX path (onnx_model.scores, the same formula in NumPy), which must not import Keras."""
    starts = range(0, len(losses), batch_size)
    batch_means = np.array([losses[s : s + batch_size].mean(dtype=np.float32) for s in starts], np.float64)
    sizes = np.array([len(losses[s : s + batch_size]) for s in starts], np.float64)
    loss = float((batch_means * sizes).sum() / sizes.sum()) if len(losses) else float("nan")
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y)) if len(y) else float("nan")
    return {"test_loss": loss, "test_accuracy": accuracy}
