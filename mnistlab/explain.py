"""Why this answer: integrated-gradients saliency maps of a model's answers.

    explain(model, images)   (n, 28, 28) attributions: how much each pixel added to the answer

Integrated gradients (Sundararajan, Taly and Yan, 2017) attributes the change in the target class's
probability between a baseline (a black image) and the picture to its pixels: each pixel's difference
from the baseline times the model's gradient averaged along the straight path between the two. The
average is the trapezoid rule over `steps` equal intervals, so the maps are complete: a map's sum is
f(image) - f(baseline) up to the rule's error, which shrinks as `steps` grows.

All steps of all images run as one batch through one program per model, jitted once (JAX): the
model's stateless call in inference mode under jax.grad, the weights passed as arguments, as
mnistlab.inference's forward pass takes them.
"""

import sys
import threading
import types
import weakref

import mnistlab.backend  # noqa: F401

import keras
import numpy as np

from mnistlab.data.preprocess import for_input
from mnistlab.data.registry import IMAGE_SIDE
from mnistlab.errors import MnistlabError, UsageError
from mnistlab.inference import Forward, predict_proba

PATH_ROWS = 2048  # inputs per call, about: max(1, PATH_ROWS // (steps + 1)) images, each with its steps + 1 points

_PROGRAMS = weakref.WeakKeyDictionary()  # model -> its jitted attribution program
_PROGRAMS_LOCK = threading.Lock()


def explain(model, images, steps=32, baseline=None, target=None) -> np.ndarray:
    """Integrated-gradients attributions of `model`'s answers for `images`: float32 (n, 28, 28).

    What is attributed is the softmax probability (not the log-probability) of the `target` class
    (an int for every image, or one per image; default: the class the model predicts for each), so a
    map sums to about p(image) - p(baseline) of that class. Positive pixels speak for the class,
    negative ones against it.

    images: digits as mnistlab takes them (data.for_input): uint8 0-255 or floats in [0, 1], in any
    layout with 784 values per image. baseline: one image (or one per image) in the same form
    (default: black, all zeros). steps: intervals of the trapezoid rule along the path (at least 1).
    The model's output must be class probabilities (the last layer a softmax), as mnistlab's are.
    """
    if keras.backend.backend() != "jax":
        raise MnistlabError(f"explain needs the JAX backend, not {keras.backend.backend()}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise UsageError(f"steps must be a whole number of at least 1, got {steps!r}")
    x = for_input(images, model)
    n = len(x)
    if not n:
        return np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.float32)
    base = np.zeros_like(x) if baseline is None else for_input(as_batch(baseline, x), model)
    if len(base) == 1:
        base = np.broadcast_to(base, x.shape)
    if base.shape != x.shape:
        raise UsageError(f"{len(base)} baselines for {n} images: give one, or one per image")
    classes = int(model.output_shape[-1])
    if target is None:
        targets = predict_proba(model, x).argmax(axis=1)
    else:
        targets = np.broadcast_to(np.asarray(target), (n,)).astype(np.int64)
        if targets.min() < 0 or targets.max() >= classes:
            raise UsageError(f"target classes must be 0-{classes - 1}, got {np.asarray(target).tolist()}")
    program = program_of(model)
    trainable, non_trainable = Forward.weights(model)
    maps = []
    chunk = max(1, PATH_ROWS // (steps + 1))  # bounds the memory the gradients' batch takes
    for start in range(0, n, chunk):
        size = min(chunk, n - start) if n > chunk else n
        rows = slice(start, start + size)
        pad = (chunk - size) if n > chunk else 0  # every chunk the same shape: one compilation
        batch = [padded(a[rows], pad) for a in (x, base, targets)]
        maps.append(np.asarray(program(trainable, non_trainable, *batch, steps=int(steps)))[:size])
    return np.concatenate(maps).reshape(n, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)


def as_batch(image, x):
    """A baseline given as one image (28x28, 784 values...) as a batch of one; a batch as it is."""
    image = np.asarray(image)
    return image[None] if image.size == x[0].size else image


def padded(array, pad):
    array = np.ascontiguousarray(array)
    return np.concatenate([array, np.repeat(array[-1:], pad, axis=0)]) if pad else array


def program_of(model):
    """(trainable, non_trainable, x, baseline, targets, steps) -> attributions shaped as x, for
    `model`, jitted once per model (and once per steps and batch shape)."""
    import jax
    import jax.numpy as jnp

    with _PROGRAMS_LOCK:
        cached = _PROGRAMS.get(model)
        if cached is None:
            ref = weakref.ref(model)  # the cache must not keep the model alive

            def attributions(trainable, non_trainable, x, baseline, targets, steps):
                alive = ref()
                assert alive is not None
                alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)  # (steps + 1,)
                shape = (steps + 1,) + (1,) * x.ndim
                path = baseline[None] + alphas.reshape(shape) * (x - baseline)[None]  # (steps+1, n, ...)
                flat = path.reshape((-1,) + x.shape[1:])
                picks = jnp.tile(targets, steps + 1)  # the target of each row of `flat`

                def total(inputs):  # each row's probability depends on its own input only
                    probabilities = alive.stateless_call(trainable, non_trainable, inputs, training=False)[0]
                    return jnp.take_along_axis(probabilities, picks[:, None], axis=1).sum()

                gradients = jax.grad(total)(flat).reshape(path.shape)
                weights = jnp.ones(steps + 1, x.dtype).at[0].set(0.5).at[-1].set(0.5) / steps  # trapezoid
                mean = jnp.tensordot(weights, gradients, axes=1)
                return (x - baseline) * mean

            cached = _PROGRAMS[model] = jax.jit(
                attributions, static_argnames=("steps",), compiler_options=compile_options()
            )
    return cached


class _Callable(types.ModuleType):
    """Once this module is imported, `mnistlab.explain` names it rather than the function (Python sets a
    package's submodules as its attributes): calling the module calls the function, so that
    `mnistlab.explain(...)` works every time, not only the first (as mnistlab.search does)."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable


def compile_options():
    """XLA's level-1 backend optimisation on a CPU: the attribution program compiles in about half the
    time (a report's first map: 0.8 s otherwise) and gives the same maps (tests/inference/test_explain.py)."""
    import jax

    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None
