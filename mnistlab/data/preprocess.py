"""Turning pixel arrays into what the models eat, as the notebook does:
float32 in [0, 1], shaped as the model's input (flat 784-vectors for dense
models, (28, 28, 1) images for convolutional ones), and one-hot labels.

for_input is the one place pixels are made ready for a model; everything that
feeds one (prediction, evaluation, training, the web server) goes through it.
"""

import math

import numpy as np

from mnistlab.data.registry import NUM_CLASSES
from mnistlab.errors import MnistlabError


def scale(x):
    """Pixels 0-255 as float32 in [0, 1]."""
    return np.asarray(x, dtype=np.float32) / np.float32(255)


def input_shape_of(target):
    """A model's input shape without the batch axis, or `target` itself when it is a shape."""
    shape = getattr(target, "input_shape", None)
    return tuple(shape[1:]) if shape is not None else tuple(target)


def for_input(x, target, scaled=True):
    """Pixels made ready for a model: `x` reshaped to `target`'s input shape (`target`: a Keras model
    or a shape without the batch axis), as float32 in [0, 1].

    x: uint8 pixels 0-255, as MNIST stores them, or floats already in [0, 1], in any layout with the
    right number of values per sample: (n, 28, 28), (n, 28, 28, 1), (n, 784).
    scaled=False keeps uint8 pixels as they are (a view, no copy) for a training loop that scales
    them itself, batch by batch; floats are float32 either way.
    """
    x = np.asarray(x)
    shape = input_shape_of(target)
    if x.ndim < 1 or math.prod(x.shape[1:]) != math.prod(shape):
        raise MnistlabError(f"images of shape {x.shape[1:]} do not fit a model expecting {shape}")
    x = x.reshape((len(x),) + shape)
    if x.dtype == np.uint8:
        return scale(x) if scaled else x
    return x if x.dtype == np.float32 else x.astype(np.float32)


def shaped(x, input_shape):
    """for_input(x, input_shape, scaled=False): uint8 kept, only reshaped (the training loop's form)."""
    return for_input(x, input_shape, scaled=False)


def scale_pixels(x):
    """uint8 pixels as float32 in [0, 1] (scale); any other array as it is."""
    x = np.asarray(x)
    return scale(x) if x.dtype == np.uint8 else x


def one_hot(y, num_classes=NUM_CLASSES):
    return np.eye(num_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
