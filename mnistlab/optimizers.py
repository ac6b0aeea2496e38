"""Optimizers by name, with two sets of defaults.

The notebook's optimizer table came from Keras 2, whose defaults differ from
Keras 3's: learning rates for Adagrad, Adadelta, Adamax and Nadam, and Adagrad's
accumulators, which started at 0 (Keras 3: 0.1, smaller first steps). With
Keras 3 defaults Adadelta barely learns in one epoch, so the notebook's
experiment uses defaults="notebook".
"""
from mnistlab.backend import import_keras

NAMES = ("SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam")

DEFAULT_LR = {
    "keras": {"SGD": 0.01, "RMSprop": 0.001, "Adagrad": 0.001, "Adadelta": 0.001,
              "Adam": 0.001, "Adamax": 0.001, "Nadam": 0.001},
    "notebook": {"SGD": 0.01, "RMSprop": 0.001, "Adagrad": 0.01, "Adadelta": 1.0,
                 "Adam": 0.001, "Adamax": 0.002, "Nadam": 0.002},
}

# Keras 2 defaults that are not learning rates
NOTEBOOK_OPTIONS = {"Adagrad": {"initial_accumulator_value": 0.0}}


def canonical_name(name):
    from mnistlab.params import check

    return check("optimizer", name)


def learning_rate(name, lr=None, defaults="keras"):
    from mnistlab.params import check

    lr = check("lr", lr)
    if lr is not None:
        return lr
    return DEFAULT_LR[check("optimizer_defaults", defaults)][canonical_name(name)]


def make_optimizer(name="Adam", lr=None, defaults="keras"):
    """A Keras optimizer instance by (case-insensitive) name."""
    name = canonical_name(name)
    options = NOTEBOOK_OPTIONS.get(name, {}) if defaults == "notebook" else {}
    return getattr(import_keras().optimizers, name)(learning_rate=learning_rate(name, lr, defaults), **options)
