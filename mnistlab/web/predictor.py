"""The served model: loaded once, its forward pass compiled once and warmed up
at start, so that a request pays only for the arithmetic.

    load_predictor(path)   OnnxPredictor when the run folder has a current model.onnx
                           (onnx_model.onnx_for), else Predictor
    Predictor(model)       a Keras model: requests go through the one prediction path,
                           mnistlab.inference.predict_proba, on a Forward frozen on the weights the
                           model has at start (see inference for why a jitted, stateless call is the
                           fast and thread-safe one)
    OnnxPredictor(path)    the run folder's model.onnx through onnxruntime (mnistlab.onnx_model):
                           plain predictions import neither Keras nor JAX; an explanation (computed
                           by JAX) and /api/model's layer list load the Keras model on first use

Either gives calibrated probabilities for a calibrated run folder (its temperature.json). This
module imports Keras only where a Keras model is used, so that the ONNX path stays light.
"""

import math
import sys
import threading

import numpy as np

from mnistlab.data.registry import IMAGE_SIDE, NUM_CLASSES, PIXELS
from mnistlab.errors import MnistlabError
from mnistlab.storage import model_path

EXPLAIN_STEPS = 16  # the page's maps: within a few percent of complete (tests/inference/test_explain.py)


class Predictor:
    """One model, ready to classify 28x28 images from many threads at once."""

    def __init__(self, model, file=None):
        check_digit_classifier(model, file or "the model")
        from mnistlab.inference import Forward

        self.model = model
        self.file = file
        self._forward = Forward(model, frozen=True)
        # warm-up: compile now, not on the first request
        self.num_classes = len(self.predict(np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)))

    @classmethod
    def load(cls, path, safe_mode=True):
        from mnistlab.backend import use_disk_cache

        from mnistlab.storage import load_model

        use_disk_cache()  # Keras' weight-initialising programs and ours compile once per machine, not per start
        return cls(load_model(path, safe_mode=safe_mode), model_path(path))

    def headline(self):
        """What the server says it serves, at start."""
        return f"{self.file} ({self.model.name}, {self.model.count_params():,} parameters)"

    def predict(self, image):
        """Probabilities (1-D float array) for one (28, 28) float image in [0, 1]."""
        from mnistlab.inference import predict_proba

        x = np.asarray(image, np.float32)[None]
        return predict_proba(self.model, x, forward=self._forward)[0].astype(np.float64)

    def explain(self, image, digit):
        """The (28, 28) integrated-gradients map of answer `digit` for one (28, 28) float image
        (mnistlab.explain, EXPLAIN_STEPS intervals: a drawing's map in tens of milliseconds)."""
        from mnistlab.explain import explain

        return explain(self.model, np.asarray(image, np.float32)[None], steps=EXPLAIN_STEPS, target=digit)[0]

    def describe(self):
        import keras

        from mnistlab.storage import temperature_of

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


class OnnxPredictor:
    """Run folder `path`'s model.onnx (file `onnx`) through onnxruntime, answering as Predictor does;
    the Keras model (for explain and describe) is loaded on first use, with `safe_mode`."""

    def __init__(self, path, onnx, safe_mode=True):
        from mnistlab.onnx_model import OnnxModel

        self.path = path
        self.file = onnx
        self.safe_mode = safe_mode
        self.onnx = OnnxModel.for_run(path, onnx)
        outputs = [d if isinstance(d, int) else None for d in self.onnx.session.get_outputs()[0].shape]
        check_digit_classifier(_Shapes((None, *self.onnx.input_shape), tuple(outputs)), onnx)
        self._keras = None
        self._keras_lock = threading.Lock()
        try:  # warm-up: onnxruntime plans its first run now, not on the first request
            self.num_classes = len(self.predict(np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.float32)))
        except Exception as e:  # a graph that loads but cannot run: as damaged as one that does not load
            from mnistlab.errors import first_line

            raise MnistlabError(f"{onnx}: cannot run the ONNX model ({first_line(e)})") from None

    def headline(self):
        return f"{self.file} (through onnxruntime; explanations load model.keras on first use)"

    def predict(self, image):
        """Probabilities (1-D float array) for one (28, 28) float image in [0, 1]."""
        return self.onnx.predict_proba(np.asarray(image, np.float32)[None])[0].astype(np.float64)

    def keras(self):
        """The run folder's Keras model as a Predictor, loaded on first call (seconds: Keras and JAX)."""
        with self._keras_lock:
            if self._keras is None:
                self._keras = Predictor.load(self.path, safe_mode=self.safe_mode)
            return self._keras

    def explain(self, image, digit):
        return self.keras().explain(image, digit)

    def describe(self):
        return self.keras().describe()


def load_predictor(path, safe_mode=True):
    """The Predictor for model file or run folder `path`: an OnnxPredictor when the run folder has a
    current model.onnx (onnx_model.onnx_for), else the Keras model. A model.onnx that cannot be loaded
    or run is one notice line on stderr, and the Keras model is served."""
    from mnistlab.onnx_model import onnx_for

    onnx = onnx_for(path)
    if onnx:
        try:
            return OnnxPredictor(path, onnx, safe_mode=safe_mode)
        except MnistlabError as e:
            print(f"mnistlab serve: notice: {e}; serving model.keras instead", file=sys.stderr)
    return Predictor.load(path, safe_mode=safe_mode)


class _Shapes:
    """An ONNX graph's input and output shapes, as check_digit_classifier reads a Keras model's."""

    def __init__(self, input_shape, output_shape):
        self.input_shape = input_shape
        self.output_shape = output_shape


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
