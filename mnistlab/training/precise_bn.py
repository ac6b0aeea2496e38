"""Precise batch norm: a model's batch-norm statistics recomputed for the weights it has.

Batch normalization's moving mean and variance trail the weights by ~1/(1 - momentum) = 100 steps
and start at 0 and 1, so after a short run, or while the weights still move fast, they describe
weights long gone: the resnet after one epoch at batch 256 (235 steps) trained to 69% and scored
18.7%. Here each batch-norm layer's population statistics are measured afresh over a pass of
training batches (Wu & Johnson's "precise BN"): the network in training mode, as it was trained
(each layer normalised by its batch's statistics), dropout off, the weights untouched; the mean of
the batch means and the population variance over all the samples go into moving_mean and
moving_variance, so a saved .keras scores the same in stock Keras.

PreciseBatchNorm does it before every validation and at the end of training, on either engine
(Keras' fit and the fast path both call on_test_begin with the model's variables current). A run
that trains on transformed images is measured on transformed images too, as training's batches
were: statistics of clean images made the test-time copies (transformed as training's) score worse
than the image alone (Fashion-MNIST, 4 epochs of the best preset: copies 0.9151 against plain
0.9176; with statistics of transformed images 0.9179 against 0.9167).
"""

import weakref

import mnistlab.backend  # noqa: F401

import jax
import jax.numpy as jnp
import keras
import numpy as np

from mnistlab.data import scale_pixels
from mnistlab.training.callbacks import RunCallback

# 2,048 images (16 batches of 128): the sampling error of a mean ~2% of a standard deviation,
# for 1-2 s on a busy 2-core CPU, a few % of a convnet epoch (CHANGELOG.md).
PASS_SAMPLES = 2048

_programs = weakref.WeakKeyDictionary()  # model -> its compiled batch-statistics program


def batch_norm_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


class _Measuring:
    """While tracing: batch norm's momentum 0, so that its updated moving statistics are the batch's own,
    and dropout off, so that the layers after it see the inputs inference gives them."""

    def __init__(self, model):
        self.norms = batch_norm_layers(model)
        self.dropouts = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]

    def __enter__(self):
        self.saved = [layer.momentum for layer in self.norms], [layer.rate for layer in self.dropouts]
        for layer in self.norms:
            layer.momentum = 0.0
        for layer in self.dropouts:
            layer.rate = 0.0

    def __exit__(self, *exc):
        for layer, momentum in zip(self.norms, self.saved[0]):
            layer.momentum = momentum
        for layer, rate in zip(self.dropouts, self.saved[1]):
            layer.rate = rate


def statistics_program(model):
    """jit(trainable, non-trainable, batch) -> the non-trainable values after one training-mode call."""
    program = _programs.get(model)
    if program is None:

        def call(trainable, non_trainable, x):
            with _Measuring(model):  # read as the function is traced
                return model.stateless_call(trainable, non_trainable, x, training=True)[1]

        program = _programs[model] = jax.jit(call)
    return program


def recompute(model, x, batch_size, seed=0, samples=PASS_SAMPLES):
    """Set each batch-norm layer's moving statistics to its inputs' over up to `samples` of the
    training images `x` (uint8 pixels or float, shaped as the model takes them), in batches of
    `batch_size` drawn in a fixed order of `seed`. A model without batch norm is left as it is."""
    norms = batch_norm_layers(model)
    if not norms:
        return
    images = pass_images(x, seed, samples)
    batches = max(1, len(images) // batch_size)  # whole batches: each weighs the same
    size = min(batch_size, len(x))
    positions = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    slots = [(positions[id(layer.moving_mean)], positions[id(layer.moving_variance)]) for layer in norms]
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    program = statistics_program(model)
    sums = None
    for b in range(batches):
        xb = scale_pixels(np.asarray(images[b * size : (b + 1) * size]))
        after = program(trainable, non_trainable, xb)
        moments = [(after[m], after[v] + jnp.square(after[m])) for m, v in slots]  # E[x], E[x^2] of the batch
        sums = moments if sums is None else [(s1 + m1, s2 + m2) for (s1, s2), (m1, m2) in zip(sums, moments)]
    variables = model.non_trainable_variables
    for (m, v), (s1, s2) in zip(slots, sums or []):
        mean = s1 / batches
        variables[m].assign(mean)
        variables[v].assign(jnp.maximum(s2 / batches - jnp.square(mean), 0.0))  # rounding may dip below 0


def pass_images(x, seed, samples=PASS_SAMPLES):
    """The images a pass reads, in its order: up to `samples` of x drawn in a fixed order of `seed`."""
    return x[np.random.default_rng(seed).permutation(len(x))[:samples]]


class PreciseBatchNorm(RunCallback):
    """Recompute the statistics before each validation and at the end of training (once per set of
    weights). It changes nothing the last validation did not see, so it counts as one that only looks."""

    def __init__(self, x, batch_size, seed=0, transform=None):
        """transform: (images, epoch) -> those images as that epoch trains on them (augmentation), or None."""
        super().__init__()
        if transform is not None:  # only the images a pass reads are transformed
            x = pass_images(x, seed)
        self.x, self.batch_size, self.seed, self.transform = x, batch_size, seed, transform
        self.current = False  # the statistics match the weights as they are now
        self.epoch = 0

    def refresh(self):
        if not self.current:
            x = self.x if self.transform is None else self.transform(self.x, self.epoch)
            recompute(self.model, x, self.batch_size, self.seed)
            self.current = True

    def on_epoch_begin(self, epoch, logs=None):
        self.current, self.epoch = False, epoch

    def on_test_begin(self, logs=None):
        self.refresh()

    def on_train_end(self, logs=None):
        self.refresh()
