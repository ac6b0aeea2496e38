"""Turning raw uint8 arrays into what the models eat, as the notebook does:
float32 in [0, 1], flat 784-vectors for dense models, (28, 28, 1) images for
convolutional ones, one-hot labels.
"""
import numpy as np

NUM_CLASSES = 10


def scale(x):
    return np.asarray(x, dtype=np.float32) / np.float32(255)


def scale_pixels(x):
    """uint8 pixels as float32 in [0, 1] (scale); any other array as it is."""
    x = np.asarray(x)
    return scale(x) if x.dtype == np.uint8 else x


def shaped(x, input_shape):
    """uint8 images reshaped, not yet scaled, for a model whose input is `input_shape` (without batch):
    (n, 784) rows for a dense model, (n, 28, 28, 1) for a convolutional one. A view, no copy."""
    x = np.asarray(x)
    if len(input_shape) == 1:
        return x.reshape(len(x), -1)
    return x.reshape(*x.shape[:3], 1) if x.ndim == 3 else x


def flat(x):
    """(n, 28, 28) uint8 -> (n, 784) float32."""
    return scale(shaped(x, (784,)))


def images(x):
    """(n, 28, 28) uint8 -> (n, 28, 28, 1) float32."""
    return scale(shaped(x, (28, 28, 1)))


def one_hot(y, num_classes=NUM_CLASSES):
    return np.eye(num_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def for_input(x, input_shape):
    """uint8 images as a model whose input is `input_shape` (without batch) takes them: float32 in [0, 1]."""
    return scale(shaped(x, input_shape))
