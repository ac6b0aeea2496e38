"""The served model: loaded once, its forward pass compiled once and warmed up
at start, so that a request pays only for the arithmetic.

Keras' model.predict builds a data pipeline on every call (about 1 ms for one
image, model(x) about 3 ms) and predict_on_batch (0.4 ms) swaps the model's
state in and out, which is not safe from several threads; a jitted, stateless
call on fixed weights is both pure and the fastest (0.2 ms for the notebook DNN;
bench/web_load.py --forward).
"""
import threading

import mnistlab.backend  # noqa: F401
import keras
import numpy as np

from mnistlab.errors import MnistlabError
from mnistlab.evaluation import load_model, model_path, prepare

MNIST_PIXELS = 28 * 28


def compile_forward(model):
    """x (batch shaped as the model's input) -> class probabilities, compiled once,
    with the weights the model has now."""
    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        # Our own copy of the weights: Keras donates its variables' buffers to
        # its own predict/fit steps, which would leave references to them dead.
        trainable = [jnp.array(v.value, copy=True) for v in model.trainable_variables]
        non_trainable = [jnp.array(v.value, copy=True) for v in model.non_trainable_variables]

        # Weights are arguments, not closed-over constants, so XLA does not fold
        # megabytes of them into the program at compile time.
        @jax.jit
        def stateless(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        return lambda x: stateless(trainable, non_trainable, x)

    lock = threading.Lock()  # other backends: Keras' own compiled path, one call at a time

    def forward(x):
        with lock:
            return model.predict_on_batch(x)

    return forward


class Predictor:
    """One model, ready to classify 28x28 images from many threads at once."""

    def __init__(self, model, file=None):
        shape = tuple(model.input_shape[1:])
        if int(np.prod(shape)) != MNIST_PIXELS:
            raise MnistlabError(f"the model takes input of shape {shape}, not 28x28 images")
        self.model = model
        self.file = file
        self._forward = compile_forward(model)
        self.num_classes = len(self.predict(np.zeros((28, 28), np.float32)))  # warm-up: compile now

    @classmethod
    def load(cls, path, safe_mode=True):
        return cls(load_model(path, safe_mode=safe_mode), model_path(path))

    def predict(self, image):
        """Probabilities (1-D float array) for one (28, 28) float image in [0, 1]."""
        x = prepare(self.model, np.asarray(image, np.float32)[None])
        return np.asarray(self._forward(x), dtype=np.float64)[0]

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
