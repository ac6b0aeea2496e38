"""A model as a TrainConfig says, compiled: its loss, its optimizer (and schedule), accuracy."""

import mnistlab.backend  # noqa: F401

import keras

from mnistlab.models import build_model, seeded
from mnistlab.optimizers import make_optimizer


def compile_model(model, config, steps_per_epoch=None):
    """Compile as `config` says; a cosine schedule spans config.epochs x steps_per_epoch steps."""
    config = config.resolved()
    total_steps = steps_per_epoch * config.epochs if steps_per_epoch else None
    model.compile(
        loss=make_loss(config.loss, config.label_smoothing),
        optimizer=make_optimizer(
            config.optimizer,
            config.lr,
            config.optimizer_defaults,
            schedule=config.schedule,
            total_steps=total_steps,
            warmup=config.warmup,
            weight_decay=config.weight_decay,
            ema=config.ema,
        ),
        metrics=["accuracy"],
    )
    return model


def make_loss(name, label_smoothing=0.0):
    """A Keras loss by name; with label smoothing, the categorical crossentropy (TrainConfig checks the name)."""
    if not label_smoothing:
        return name
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def make_model(config, n_train, layer_seeds=False):
    """A fresh model as `config` says, compiled for training on n_train samples; layer_seeds:
    each layer seeded from config.seed (models.seeded), independent of the process's random state."""
    config = config.resolved()
    model = build_model(config.model, hidden=config.hidden, dropout=config.dropout, filters=config.filters)
    if layer_seeds:
        model = seeded(model, config.seed)
    return compile_model(model, config, steps_per_epoch=-(-n_train // config.batch_size))
