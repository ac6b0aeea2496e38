"""Keras' fit fed augmented batches: each epoch a fresh order and the epoch's transformed images
(data.augment.epoch_images), functions of (seed, epoch) only.

The whole epoch is transformed at its start; batches are then slices. (Transforming batch by batch
in __getitem__ cost 0.57 s a step on this 2-core CPU, the data thread competing with the step.)"""

import keras
import numpy as np

from mnistlab import streams
from mnistlab.data import scale
from mnistlab.data.augment import epoch_images


class AugmentedBatches(keras.utils.PyDataset):
    def __init__(self, x, y, config, initial_epoch=0):
        """config: the run's TrainConfig (its batch size, shuffle, seed and augmentation)."""
        super().__init__()
        self.x, self.y, self.config, self.batch_size = x, y, config, config.batch_size
        self.transform = transformed(config) or (lambda images, epoch: images)
        self.epoch = initial_epoch
        self.prepare()

    def prepare(self):
        c = self.config
        rng = np.random.Generator(np.random.PCG64([c.seed, self.epoch, streams.KERAS_ORDER]))
        order = rng.permutation(len(self.x)) if c.shuffle else np.arange(len(self.x))
        self.epoch_x = self.transform(self.x, self.epoch)[order]
        self.epoch_y = self.y[order]

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.epoch_x[rows]
        return (scale(x) if x.dtype == np.uint8 else x), self.epoch_y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.prepare()


def augmented(config):
    """Does the run train on transformed images (data.augment)?"""
    return bool(config.augment or config.flip or config.erase or config.elastic)


def transformed(config):
    """(images, epoch) -> the images as that epoch of the run trains on them, or None (no augmentation):
    both training loops' epochs and precise batch norm's passes."""
    if not augmented(config):
        return None
    c = config
    return lambda x, epoch: epoch_images(x, c.augment or 0.0, c.seed, epoch, c.flip, c.erase, c.elastic)
