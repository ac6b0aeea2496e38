"""The served model: loaded once, its forward pass compiled once and warmed up
at start, so that a request pays only for the arithmetic.

Requests go through the one prediction path, mnistlab.inference.predict_proba,
on a Forward frozen on the weights the model has at start (see inference for
why a jitted, stateless call is the fast and thread-safe one).
"""
import mnistlab.backend  # noqa: F401
import keras
import numpy as np

from mnistlab.data.preprocess import input_shape_of
from mnistlab.data.registry import IMAGE_SIDE, PIXELS
from mnistlab.errors import MnistlabError
from mnistlab.evaluation import load_model, model_path
from mnistlab.inference import Forward, predict_proba


class Predictor:
    """One model, ready to classify 28x28 images from many threads at once."""

    def __init__(self, model, file=None):
        shape = input_shape_of(model)
        if int(np.prod(shape)) != PIXELS:
            raise MnistlabError(f"the model takes input of shape {shape}, not {IMAGE_SIDE}x{IMAGE_SIDE} images")
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

    def describe(self):
        model = self.model
        return {
            "name": model.name,
            "file": self.file,
            "backend": keras.backend.backend(),
            "input_shape": list(model.input_shape[1:]),
            "classes": self.num_classes,
            "params": int(model.count_params()),
            "layers": [{"name": layer.name, "type": type(layer).__name__,
                        "output_shape": list(layer.output.shape[1:]), "params": int(layer.count_params())}
                       for layer in model.layers],
        }
