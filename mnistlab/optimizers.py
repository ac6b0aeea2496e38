"""Optimizers by name, with two sets of defaults.

The notebook's optimizer table came from Keras 2, whose defaults differ from
Keras 3's: learning rates for Adagrad, Adadelta, Adamax and Nadam, and Adagrad's
accumulators, which started at 0 (Keras 3: 0.1, smaller first steps). With
Keras 3 defaults Adadelta barely learns in one epoch, so the notebook's
experiment uses defaults="notebook". The names and both learning-rate tables are data in
mnistlab.catalog (OPTIMIZER_NAMES, DEFAULT_LR).
"""

from mnistlab.backend import import_keras

from mnistlab.catalog import DEFAULT_LR
from mnistlab.params import check

# Keras 2 defaults that are not learning rates
NOTEBOOK_OPTIONS = {"Adagrad": {"initial_accumulator_value": 0.0}}
# Keras' moving average of the weights (use_ema) starts from the first step's weights, which keep a
# share momentum^steps of it: 0.999 over a 150 s run of the best preset (844 steps) left 43% of them,
# and the model validated at 0.91 scored 0.60. A run's momentum is lowered until at most this share
# is left at its end: 0.999 holds from 6,905 steps on. (Fashion-MNIST, the best preset for 938 steps,
# validated at 0.9096 with the trained weights: their average scored 0.8993 with 5% left, 0.9089 with
# 1%, 0.9109 with 0.1%, 0.9108 with 0.01%.)
EMA_START_SHARE = 0.001


def canonical_name(name):
    return check("optimizer", name)


def learning_rate(name, lr=None, defaults="keras"):
    lr = check("lr", lr)
    if lr is not None:
        return lr
    return DEFAULT_LR[check("optimizer_defaults", defaults)][canonical_name(name)]


def scheduled(schedule):
    """Does the learning rate follow a schedule (not None or "constant")?"""
    return schedule not in (None, "constant")


def schedule_of(rate, schedule=None, total_steps=None, warmup=0.1):
    """The learning rate as Keras takes it: a number (constant), or for "cosine" a linear warm-up
    from rate/10 over the first `warmup` share of `total_steps`, then a cosine decay to 0."""
    if not scheduled(schedule):
        return rate
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    if not total_steps:
        raise ValueError("a cosine schedule needs the number of training steps")
    warmup_steps = int(total_steps * warmup)
    return import_keras().optimizers.schedules.CosineDecay(
        rate / 10 if warmup_steps else rate,
        max(1, total_steps - warmup_steps),
        warmup_target=rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def make_optimizer(
    name="Adam", lr=None, defaults="keras", schedule=None, total_steps=None, warmup=0.1, weight_decay=None, ema=None
):
    """A Keras optimizer instance by (case-insensitive) name; `schedule` "cosine" needs `total_steps`.
    weight_decay is Keras' decoupled decay (each step shrinks a weight by lr x weight_decay); ema:
    the momentum of Keras' moving average of the weights (use_ema), which training ends on; over
    total_steps, at most ema_momentum(ema, total_steps)."""
    name = canonical_name(name)
    options = dict(NOTEBOOK_OPTIONS.get(name, {}) if defaults == "notebook" else {})
    if weight_decay:
        options["weight_decay"] = weight_decay
    if ema:
        options |= {"use_ema": True, "ema_momentum": ema_momentum(ema, total_steps)}
    rate = schedule_of(learning_rate(name, lr, defaults), schedule, total_steps, warmup)
    return getattr(import_keras().optimizers, name)(learning_rate=rate, **options)


def ema_momentum(ema, total_steps=None):
    """The moving average's momentum for a run of total_steps (None: unknown): `ema`, or less where
    the first step's weights would keep more than EMA_START_SHARE of the average at the run's end."""
    return min(ema, EMA_START_SHARE ** (1 / total_steps)) if total_steps else ema
