"""The served model: loaded once, its forward pass compiled once and warmed up
at start, so that a request pays only for the arithmetic.

Requests go through the one prediction path, mnistlab.inference.predict_proba,
on a Forward frozen on the weights the model has at start (see inference for
why a jitted, stateless call is the fast and thread-safe one); a calibrated run
folder's model gives calibrated probabilities (its temperature, attached when
storage.load_model loads it).
"""

import math

import mnistlab.backend  # noqa: F401

import keras
import numpy as np

from mnistlab.data.registry import IMAGE_SIDE, NUM_CLASSES, PIXELS
from mnistlab.errors import MnistlabError
from mnistlab.inference import Forward, predict_proba
from mnistlab.storage import load_model, model_path, temperature_of

EXPLAIN_STEPS = 16  # the page's maps: within a few percent of complete (tests/inference/test_explain.py)


class Predictor:
    """One model, ready to classify 28x28 images from many threads at once."""

    def __init__(self, model, file=None):
        check_digit_classifier(model, file or "the model")
        self.model = model
        self.file = file
        self._forward = Forward(model, frozen=True)
        # warm-up: compile now, not on the first request
        self.num_classes = len(self.predict(np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)))

    @classmethod
    def load(cls, path, safe_mode=True):
        return cls(load_model(path, safe_mode=safe_mode), model_path(path))

    def predict(self, image):
        """Probabilities (1-D float array) for one (28, 28) float image in [0, 1]."""
        x = np.asarray(image, np.float32)[None]
        return predict_proba(self.model, x, forward=self._forward)[0].astype(np.float64)

    def explain(self, image, digit):
        """The (28, 28) integrated-gradients map of answer `digit` for one (28, 28) float image
        (mnistlab.explain, EXPLAIN_STEPS intervals: a drawing's map in tens of milliseconds)."""
        from mnistlab.explain import explain

        return explain(self.model, np.asarray(image, np.float32)[None], steps=EXPLAIN_STEPS, target=digit)[0]

    def describe(self):
        model = self.model
        return {
            "name": model.name,
            "file": self.file,
            "backend": keras.backend.backend(),
            "input_shape": list(model.input_shape[1:]),
            "classes": self.num_classes,
            "temperature": temperature_of(model),  # None: the probabilities as the model gives them
            "params": int(model.count_params()),
            "layers": [
                {
                    "name": layer.name,
                    "type": type(layer).__name__,
                    "output_shape": list(layer.output.shape[1:]),
                    "params": int(layer.count_params()),
                }
                for layer in model.layers
            ],
        }


def check_digit_classifier(model, name):
    """A MnistlabError unless `model` takes one 28x28 image (any layout of 784 values) and
    gives one probability per digit: what the page and the API send and show."""
    try:
        inputs, outputs = model.input_shape, model.output_shape
    except (AttributeError, ValueError):
        raise MnistlabError(f"{name} is not a digit classifier: it has no defined input and output shape") from None
    problem = None
    if not is_shape(inputs) or None in inputs[1:] or math.prod(inputs[1:]) != PIXELS:
        problem = f"it takes input of shape {shape_text(inputs)}, not {IMAGE_SIDE}x{IMAGE_SIDE} images"
    elif not is_shape(outputs) or tuple(outputs[1:]) != (NUM_CLASSES,):
        problem = f"it outputs shape {shape_text(outputs)}, not {NUM_CLASSES} class probabilities"
    if problem:
        raise MnistlabError(f"{name} is not a digit classifier: {problem}")


def is_shape(shape):
    """One tensor's shape with its batch axis (several inputs or outputs come as a list of them)."""
    return isinstance(shape, tuple) and len(shape) >= 1 and all(d is None or isinstance(d, int) for d in shape)


def shape_text(shape):
    return str(tuple(shape[1:])) if is_shape(shape) else f"{shape} (several tensors)"
