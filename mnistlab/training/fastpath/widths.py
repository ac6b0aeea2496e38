"""Shared programs: the trials of a study that differ only in hidden widths and dropout rates train
through one compiled program.

A study samples `hidden` and `dropout` from ranges, so nearly every trial would compile programs
of its own (seconds each, as long as a pruned trial's training). Inside `shared_programs()`:
  * each hidden Dense layer is padded with zero units up to the next power of two (`bucket`). A
    padded unit's weights are zero, its output is zero (the activation maps 0 to 0), so its
    gradients are zero and every optimizer leaves it at zero: the real units train as without it.
  * dropout rates that need 16 random bits (no multiple of 1/256) are inputs of the program, not
    constants; a rate multiple of 1/256 (0.5, 0.25...) keeps its own program and its fewer bits.
  * a dropout on padded units draws the mask of the unpadded layer, element for element (the
    random bits of a shape are a prefix of a longer draw's), so the masks are the unpadded ones.
What changes against the unpadded program is the rounding of sums over padded rows (zeros added in
another order). Outside a study, programs are built for the model's own shapes.
"""

import contextlib
import contextvars
import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from mnistlab.training.fastpath.layers import DenseOp, DropoutOp
from mnistlab.training.fastpath.ops import mask_bits

_sharing = contextvars.ContextVar("mnistlab_shared_programs", default=False)


@contextlib.contextmanager
def shared_programs():
    """Fits in this context pad widths and take dropout rates as inputs (the module's docstring),
    and models built in it draw their initial weights through shared programs (flat_draws)."""
    token = _sharing.set(True)
    try:
        with flat_draws():
            yield
    finally:
        _sharing.reset(token)


@contextlib.contextmanager
def flat_draws():
    """Keras' uniform initializers (Glorot's, the default) draw through one compiled program per
    shape: a new width costs a compilation longer than the draw. Here a (rows, columns) draw is the
    head of a flat draw of the next power of two, the very same values (JAX's random bits of a
    shape are a prefix of a longer draw's; tests/training/test_widths.py checks), so widths share
    programs. Keras' backend module is patched for the duration; the JAX backend only."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    from keras.src.backend.jax import random as backend_random

    original = backend_random.uniform

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        size = math.prod(shape)
        if size < 2:
            return original(shape, minval, maxval, dtype, seed)
        return original((1 << (size - 1).bit_length(),), minval, maxval, dtype, seed)[:size].reshape(shape)

    backend_random.uniform = uniform
    try:
        yield
    finally:
        backend_random.uniform = original


def sharing():
    return _sharing.get()


def bucket(units):
    """The padded width: the next power of two, at least 16."""
    return max(16, 1 << (int(units) - 1).bit_length())


def runtime_rate(rate):
    """Does this dropout rate draw 16 bits per element (ops.keep_mask), so an input can carry it?"""
    return rate > 0 and mask_bits(1.0 - rate) == 16


@dataclass(frozen=True)
class Shared:
    """How one model runs through a shared program: its variables' padded shapes and its knobs."""

    shapes: tuple  # per trainable variable, its shape in the program
    knobs: dict  # the program's inputs: keep rates, their 16-bit thresholds, the true widths


def share(ops_, signature, variables):
    """(ops, signature, Shared) for the shared program, or None where nothing would be shared."""
    import jax.numpy as jnp

    dense = [i for i, op in enumerate(ops_) if isinstance(op, DenseOp)]
    if len(dense) != sum(entry[0] == "dense" for entry in signature):
        return None
    shapes = [tuple(v.shape) for v in variables]
    padded = {}  # op index -> (true width, padded width)
    for i, j in itertools.pairwise(dense):
        op, units = ops_[i], shapes[ops_[i].weights[0]][-1]
        zero_at_zero = float(op.activation(jnp.zeros(()))) == 0.0
        if zero_at_zero and all(isinstance(between, DropoutOp) for between in ops_[i + 1 : j]):
            padded[i] = (units, bucket(units))
    rates = [op.rate for op in ops_ if isinstance(op, DropoutOp)]
    if not padded and not any(runtime_rate(r) for r in rates):
        return None
    new_ops, widths, width_of = list(ops_), [], None
    for i, op in enumerate(ops_):
        if isinstance(op, DenseOp):
            kernel = op.weights[0]
            if width_of is not None:  # the input rows of the padded layer before
                shapes[kernel] = (width_of[1],) + shapes[kernel][1:]
            width_of = padded.get(i)
            if width_of is not None:
                shapes[kernel] = shapes[kernel][:-1] + (width_of[1],)
                for w in op.weights[1:]:
                    shapes[w] = (width_of[1],)
                widths.append(width_of[0])
        elif isinstance(op, DropoutOp) and runtime_rate(op.rate):
            new_ops[i] = replace(op, runtime=True, width=len(widths) - 1 if width_of is not None else -1)
    knobs = {
        "keep": np.array([1.0 - r for r in rates], np.float32),
        "threshold": np.array([round((1.0 - r) * 2**16) for r in rates], np.int32),
        "width": np.array(widths, np.int32),
    }
    return (
        tuple(new_ops),
        shared_signature(signature, [shapes[ops_[i].weights[0]][-1] for i in dense]),
        Shared(tuple(shapes), knobs),
    )


def shared_signature(signature, widths):
    """The signature with the program's widths and runtime rates in place of the model's own."""
    widths = iter(widths)
    out = []
    for entry in signature:
        if entry[0] == "dense":
            entry = (entry[0], next(widths), *entry[2:])
        elif entry[0] == "dropout" and runtime_rate(entry[1]):
            entry = ("dropout", "input")
        out.append(entry)
    return (*out, "shared")


def pad(value, shape):
    """`value` with zeros after it up to `shape`."""
    value = np.asarray(value)
    if value.shape == tuple(shape):
        return value
    return np.pad(value, [(0, s - d) for d, s in zip(value.shape, shape)])


def unpad(value, shape):
    """The leading `shape` block of `value`."""
    if tuple(value.shape) == tuple(shape):
        return value
    return value[tuple(slice(0, d) for d in shape)]


def template_optimizer(optimizer, shapes, variables):
    """A copy of `optimizer` built for variables of the shared program's shapes: Keras' stateless
    apply checks each value's shape against the variable it stands for."""
    import keras

    template = type(optimizer).from_config(optimizer.get_config())
    template.build([keras.Variable(np.zeros(shape, v.dtype), name=v.name) for shape, v in zip(shapes, variables)])
    return template
