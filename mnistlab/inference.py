"""A model's answers: class probabilities for pixels, and test loss and accuracy.

This is the one prediction path. `mnistlab.predict`, the web server's
Predictor, `mnistlab.evaluate` and the report all get their probabilities from
predict_proba, which runs the model's forward pass in inference mode through
one program per model, compiled once (Forward):

    predict(model, images)        pictures or digit arrays -> (n, classes) probabilities
    predict_proba(model, x)       pixels (uint8 or float, any MNIST layout) -> (n, classes), calibrated
                                  by the temperature of the run folder the model was loaded from
    evaluate(model, x, y)         {"test_loss", "test_accuracy"}, as model.evaluate gives them
    tta_score(model, x, y, tta)   the same averaged over test-time copies, as tta_test_accuracy etc.
    tta_copies(metrics)           how many copies a metrics.json's tta score averaged over
    TestTimeAugmentation(...)     predict_proba's and evaluate's tta: averaged over transformed copies
    Forward(model, frozen=False)  the compiled forward pass: prepared batch -> probabilities

Keras' model.predict builds a data pipeline on every call (about 1 ms for one
image, model(x) about 3 ms) and predict_on_batch (0.4 ms) swaps the model's
state in and out, which is not safe from several threads; a jitted, stateless
call is both pure and the fastest (0.2 ms for the notebook DNN;
bench/web_load.py --forward).
"""

import threading
import weakref
from dataclasses import dataclass

import mnistlab.backend  # noqa: F401

import keras
import numpy as np

from mnistlab.calibration import apply_temperature, evaluation_scores
from mnistlab.data.augment import copy_images
from mnistlab.data.digits import as_digits
from mnistlab.data.preprocess import for_input, one_hot
from mnistlab.errors import UsageError
from mnistlab.storage import temperature_of
from mnistlab.system import EVAL_BATCH

_COMPILED = weakref.WeakKeyDictionary()  # model -> its jitted stateless forward (JAX)
_COMPILED_LOCK = threading.Lock()


def jitted(model):
    """(trainable, non_trainable, x) -> probabilities for `model`, jitted once per model and shared
    by every Forward of it. The weights are arguments, not closed-over constants, so XLA does not
    fold megabytes of them into the program at compile time."""
    import jax

    with _COMPILED_LOCK:
        cached = _COMPILED.get(model)
        if cached is None:
            ref = weakref.ref(model)  # the cache must not keep the model alive

            @jax.jit
            def stateless(trainable, non_trainable, x):
                alive = ref()  # traced only while the model lives: the cache drops it with the model
                assert alive is not None
                return alive.stateless_call(trainable, non_trainable, x, training=False)[0]

            cached = _COMPILED[model] = stateless
    return cached


class Forward:
    """`model`'s forward pass in inference mode: a batch shaped as its input -> class probabilities.

    frozen=False: on the weights the model has at each call (so it follows training).
    frozen=True: on a copy of the weights taken now, for a served model: Keras donates its
    variables' buffers to its own predict/fit steps, which would leave references to them dead.
    Safe to call from several threads.
    """

    def __init__(self, model, frozen=False):
        self._model = weakref.ref(model)
        self.jax = keras.backend.backend() == "jax"
        if self.jax:
            self._stateless = jitted(model)
            self._weights = self.weights(model, copy=True) if frozen else None
        else:
            self._lock = threading.Lock()  # other backends: Keras' own compiled path, one call at a time

    @staticmethod
    def weights(model, copy=False):
        if copy:
            import jax.numpy as jnp

            return (
                [jnp.array(v.value, copy=True) for v in model.trainable_variables],
                [jnp.array(v.value, copy=True) for v in model.non_trainable_variables],
            )
        return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

    def __call__(self, x):
        model = self._model()
        if self.jax:
            return self._stateless(*(self._weights or self.weights(model)), x)
        assert model is not None, "the model of this Forward is gone"
        with self._lock:
            return model.predict_on_batch(x)


_FORWARDS = weakref.WeakKeyDictionary()  # model -> its Forward on live weights


def forward_of(model):
    forward = _FORWARDS.get(model)
    if forward is None:
        forward = _FORWARDS[model] = Forward(model)
    return forward


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Predict on `copies` randomly transformed copies of each image besides the image itself, and
    average the probabilities: the copies drawn as training's augmentation draws them (rotation, zoom
    and shift up to `strength`, mirrored with `flip`), from `seed`."""

    copies: int
    strength: float
    flip: bool = False
    seed: int = 0

    __test__ = False  # a class named Test... that pytest must not collect

    def __post_init__(self):
        if self.copies and not (self.strength or self.flip):
            raise UsageError(
                "test-time augmentation needs augment > 0 or flip: its copies are transformed "
                "as training's augmentation transforms"
            )


def predict_proba(model, x, batch_size=EVAL_BATCH, forward=None, tta=None, calibrated=True) -> np.ndarray:
    """(n, classes) float32 probabilities for pixels `x`: uint8 0-255 or floats in [0, 1], in any
    layout with 784 values per sample (data.for_input prepares them), in batches of `batch_size`.
    `forward`: a Forward of `model` to run (default: one on the model's current weights).
    `tta`: a TestTimeAugmentation to average over (default: none).
    `calibrated`: scaled by the temperature storage.load_model attached to a calibrated run folder's
    model (mnistlab.calibration; the predicted classes stay the same), if it has one; False: as the
    model gives them."""
    probabilities = _probabilities(model, x, batch_size, forward, tta)
    temperature = temperature_of(model) if calibrated else None
    if temperature is not None:
        probabilities = apply_temperature(probabilities, temperature)
    return probabilities


def _probabilities(model, x, batch_size, forward, tta):
    """predict_proba's probabilities as the model gives them (averaged over `tta`'s copies)."""
    if tta and tta.copies:  # one copy at a time: only the probabilities are kept
        probabilities = [_probabilities(model, x, batch_size, forward, None)]
        probabilities += [
            _probabilities(
                model, copy_images(np.asarray(x), tta.strength, tta.seed, i, tta.flip), batch_size, forward, None
            )
            for i in range(tta.copies)
        ]
        return np.asarray(np.mean(probabilities, axis=0, dtype=np.float32))
    x = for_input(x, model)
    if not len(x):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    forward = forward or forward_of(model)
    if len(x) <= batch_size:  # one batch (a web request): nothing to slice or join
        return np.asarray(forward(x), dtype=np.float32)
    # All batches dispatched before the first is waited for: the device works while the host slices.
    outputs = [forward(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(out, dtype=np.float32) for out in outputs])


def predict(model, images, batch_size=None) -> np.ndarray:
    """Class probabilities, (n, classes), of a Keras model for `images`.

    `images`: an (n, 28, 28) array of MNIST-form digits (uint8 0-255 or float
    0-1; (n, 28, 28, 1) and (n, 784) too), or a list of pictures: paths, bytes,
    binary files or PIL images, each brought into MNIST form with to_mnist first.
    """
    return predict_proba(model, as_digits(images), batch_size=batch_size or EVAL_BATCH)


def evaluate(model, x, y, batch_size=EVAL_BATCH, tta=None):
    """{"test_loss", "test_accuracy"} of a model on pixels x (uint8 or float) and integer labels y, from
    predict_proba's probabilities (averaged over test-time augmentation `tta`'s copies, if given): Keras' categorical
    crossentropy (the clipping model.evaluate applies), averaged as model.evaluate averages it (each
    batch's mean, weighted by its size), and argmax accuracy."""
    y = np.asarray(y, dtype=np.int64)
    probabilities = predict_proba(model, x, batch_size=batch_size, tta=tta)
    losses = np.asarray(
        keras.losses.categorical_crossentropy(one_hot(y, probabilities.shape[1]), probabilities), dtype=np.float32
    )
    return evaluation_scores(losses, probabilities, y, batch_size)


def tta_score(model, x, y, tta, batch_size=EVAL_BATCH):
    """evaluate() averaged over `tta`'s copies, named as metrics.json holds it: tta_test_loss,
    tta_test_accuracy, tta_copies."""
    return {f"tta_{k}": v for k, v in evaluate(model, x, y, batch_size, tta=tta).items()} | {"tta_copies": tta.copies}


def tta_copies(metrics):
    """How many copies a metrics.json's tta_test_accuracy averaged over (None without one); metrics.json
    written before the copies had one name says tta_views."""
    return metrics.get("tta_copies", metrics.get("tta_views"))
