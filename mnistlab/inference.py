"""A model's answers: class probabilities for pixels, and test loss and accuracy.

(Interface laid down for the redesign; the single prediction path lands here.)
"""
import mnistlab.backend  # noqa: F401
import numpy as np

from mnistlab.data import one_hot
from mnistlab.evaluation import EVAL_BATCH, prepare


def predict_proba(model, x, batch_size=EVAL_BATCH):
    """(n, classes) float32 probabilities for uint8 pixels (any shape with 784 per sample) or floats."""
    if not len(x):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.asarray(model.predict(prepare(model, x), batch_size=batch_size, verbose=0), np.float32)


def score(model, x, y, batch_size=EVAL_BATCH):
    """{"test_loss", "test_accuracy"} of a compiled model on pixels x and integer labels y."""
    scores = model.evaluate(prepare(model, x), one_hot(y), batch_size=batch_size, verbose=0, return_dict=True)
    return {"test_loss": float(scores["loss"]), "test_accuracy": float(scores["accuracy"])}
