"""The training parameters, once: name, constraint, default, help.

`TrainConfig` (training/config.py), the command line's training options (cli/) and the search
grid's validation (search/grid.py) all come from PARAMS, so a parameter is added, checked or
documented in one place. Each parameter's constraint (constraints.py) gives its check (a value as
the API, a config.json, a grid file or the command line gives it, text included, normalised; a bad
one a ValueError saying what is wrong), and the range its help shows; the names come from
catalog.py, and the help's per-model defaults from catalog's RECIPES and SIZES. Light at import:
the CLI builds its parser from this table before Keras is loaded.
"""

from dataclasses import dataclass
from typing import Any

from mnistlab.catalog import DEFAULT_LR, ENGINES, MODEL_NAMES, OPTIMIZER_NAMES, RECIPES, SCHEDULES, SIZES
from mnistlab.constraints import Constraint, Duration, Flag, Interval, KerasLoss, Options, Sizes, Text
from mnistlab.errors import UsageError
from mnistlab.text import number_text

DEFAULT_LOSS = "categorical_crossentropy"


def dataset_names():
    # Only when asked: importing the data package loads numpy and the downloader.
    from mnistlab.data.registry import DATASETS

    return list(DATASETS)


def shown(value):
    """A value as the help shows it: 0.1, 400,100, cosine."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return number_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def joined(words):
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def per_model(values):
    """{model: value} as "0 for dnn and cnn, 0.1 for convnet and resnet": models with the same value together."""
    groups = {}
    for model, value in values.items():
        groups.setdefault(shown(value), []).append(model)
    return ", ".join(f"{value} for {joined(models)}" for value, models in groups.items())


def recipe(name):
    """The help's default of a recipe setting, from catalog.RECIPES."""
    return "the model's recipe: " + per_model({model: RECIPES[model][name] for model in MODEL_NAMES})


def model_sizes(name):
    """The help's default of hidden or filters, from catalog.SIZES (the models that have such layers)."""
    return "the model's: " + per_model({model: SIZES[model][name] for model in MODEL_NAMES if name in SIZES[model]})


@dataclass(frozen=True)
class Param:
    name: str
    constraint: Constraint  # the check, its error message and the help's range
    default: Any  # a value the constraint accepts (TrainConfig's field types), or None
    help: str  # what it is; the help adds the constraint's range and the default
    grid: bool = True  # may a search grid vary it
    # on the command line: "shared" (train and search), "train" (train only),
    # or None (given through --dataset/--data-dir/--no-verify, or the API only)
    option: str | None = "shared"
    metavar: str | None = None
    unset: str | None = None  # what a default of None stands for, as the help says it

    def check(self, value) -> Any:
        return self.constraint.check(value, self.name)

    def help_text(self, default, choices_listed=False):
        """The help: its words, then (range; default), the range left out where argparse lists the choices."""
        notes = [] if choices_listed or not self.constraint.range else [self.constraint.range]
        if default is not None or self.unset:
            notes.append(f"default: {shown(default) if default is not None else self.unset}")
        return self.help + (f" ({'; '.join(notes)})" if notes else "")


FRACTION = {"type": float, "low": 0, "high": 1}  # a share of something: 0 included, 1 not (closed="left")

PARAMS = {
    p.name: p
    for p in (
        Param("model", Options(MODEL_NAMES), "dnn", "the network"),
        Param("dataset", Options(dataset_names), "mnist", "the dataset", grid=False, option=None),
        Param("epochs", Interval(int, 1), 10, "passes over the training set"),
        Param("batch_size", Interval(int, 1), 64, "samples per training step"),
        Param("optimizer", Options(OPTIMIZER_NAMES), "Adam", "the optimizer", metavar="NAME"),
        Param(
            "lr",
            Interval(float, 0, closed="neither", optional=True),
            None,
            "learning rate",
            unset="the optimizer's under --optimizer-defaults",
        ),
        Param(
            "optimizer_defaults",
            Options(tuple(DEFAULT_LR)),
            "keras",
            "whose default learning rates: Keras 3's, or Keras 2's as the notebook had",
        ),
        Param("loss", KerasLoss(known=(DEFAULT_LOSS,)), DEFAULT_LOSS, "a Keras loss name", metavar="NAME"),
        Param(
            "hidden", Sizes(), None, "hidden dense layer sizes, as 400,100", metavar="N,N", unset=model_sizes("hidden")
        ),
        Param(
            "filters",
            Sizes(),
            None,
            "convolution filters per stage, as 32,64",
            metavar="N,N",
            unset=model_sizes("filters"),
        ),
        Param("dropout", Interval(**FRACTION), 0.5, "dropout rate"),
        Param(
            "augment",
            Interval(float, 0, 0.5, closed="both", optional=True),
            None,
            "random training-time shifts and zooms of up to this fraction of the image, rotations up to this "
            "x 90 degrees; 0: none",
            metavar="FRAC",
            unset=recipe("augment"),
        ),
        Param(
            "flip", Flag(), False, "mirror half the training images left to right each epoch: for clothes, not digits"
        ),
        Param(
            "elastic",
            Interval(float, 0, 4, closed="both"),
            0.0,
            "elastic distortions of the training images each epoch: smooth random displacements of this "
            "many pixels (standard deviation); 0: none",
            metavar="PIXELS",
        ),
        Param(
            "erase",
            Interval(float, 0, 1, closed="both"),
            0.0,
            "random erasing: blank a random rectangle, a fiftieth to a quarter of the image, in this share of "
            "the training images each epoch",
            metavar="FRAC",
        ),
        Param(
            "schedule",
            Options(SCHEDULES, optional=True),
            None,
            "learning rate schedule; cosine: a warm-up, then a cosine decay to 0",
            unset=recipe("schedule"),
        ),
        Param(
            "warmup",
            Interval(**FRACTION),
            0.1,
            "with --schedule cosine: the fraction of training steps that warm up",
            metavar="FRAC",
        ),
        Param(
            "label_smoothing",
            Interval(**FRACTION, optional=True),
            None,
            "label smoothing of the crossentropy loss",
            metavar="FRAC",
            unset=recipe("label_smoothing"),
        ),
        Param(
            "weight_decay",
            Interval(float, 0, optional=True),
            None,
            "decoupled weight decay of the optimizer",
            metavar="RATE",
            unset=recipe("weight_decay"),
        ),
        Param(
            "ema",
            Interval(float, 0, 1, closed="neither", optional=True),
            None,
            "keep an exponential moving average of the weights with this momentum, as Keras' use_ema does; the "
            "trained model's weights are the average. With 0.999 it spans about the last thousand steps; it starts "
            "from the first step's weights: a run too short to forget them, under 6,905 steps for 0.999, "
            "averages with a lower momentum, one that leaves them a thousandth of the average at its end",
            metavar="MOMENTUM",
            unset="none",
        ),
        Param("seed", Interval(int, 0), 0, "random seed: weights, shuffling, dropout"),
        Param(
            "validation_split",
            Interval(float, 0, 1, closed="neither", optional=True),
            None,
            "validate on this held-out fraction of the training set instead of the test set",
            grid=False,
            option="train",
            metavar="FRAC",
        ),
        Param("shuffle", Flag(), True, "shuffle the training set each epoch", grid=False, option="train"),
        Param("data_dir", Text(), None, "folder holding the dataset's IDX files", grid=False, option=None),
        Param("verify_data", Flag(), True, "check the files against the published MD5s", grid=False, option=None),
        Param(
            "target_accuracy",
            Interval(float, 0, 1, closed="right", optional=True),
            None,
            "stop at the first epoch whose validation accuracy reaches this, recording the time it took",
            grid=False,
            option="train",
            metavar="ACC",
        ),
        Param(
            "time_budget",
            Duration(optional=True),
            None,
            "train for this long instead of --epochs: the run times its first steps and fits the epoch count "
            "and the learning rate schedule to the budget; metrics.json records the plan and the seconds used",
            grid=False,
            option="train",
            metavar="DURATION",
            unset="none, --epochs",
        ),
        Param(
            "tta",
            Interval(int, 0),
            0,
            "test-time augmentation: average the test predictions over this many "
            "copies of each image transformed as --augment and --flip transform training's, and the image itself; "
            "recorded beside the plain test score, as metrics.json's tta_test_accuracy",
            grid=False,
            option="train",
            metavar="N",
        ),
        Param(
            "members",
            Interval(int, 1),
            1,
            "an ensemble: train this many networks one after another, each on its own seed and its share of "
            "the time budget (else --epochs each), and average their predicted probabilities in one saved model",
            grid=False,
            option="train",
            metavar="N",
        ),
        Param(
            "engine",
            Options(ENGINES),
            "auto",
            "auto: compiled whole-epoch training where the model allows, else Keras' fit; fast: insist on it; "
            "keras: always Keras' own fit",
            grid=False,
            option="train",
        ),
    )
}

GRID_NAMES = tuple(name for name, p in PARAMS.items() if p.grid)


def check(name, value, where=None) -> Any:
    """One parameter's value, checked and normalised; a wrong one is a UsageError."""
    try:
        return PARAMS[name].check(value)
    except ValueError as e:
        raise UsageError(f"bad value for {name} in {where}: {e}" if where else str(e)) from None


def option_type(name):
    """The argparse type of a parameter's option: its check, its error told argparse's way."""
    import argparse

    def parse(text):
        try:
            return PARAMS[name].check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name
    return parse


@dataclass(frozen=True)
class Unset:
    """An option's default, told apart from the same value given on the command line (so that a
    preset may replace the one and not the other)."""

    value: object


def add_options(parser, scopes=("shared",), defaults=None, presettable=False):
    """The table's options for `scopes` on an argparse parser; `defaults` overrides some defaults
    (a search trains 1 epoch, with the notebook's optimizer defaults); presettable: the defaults
    are held as Unset, for from_args' preset."""
    defaults = dict(defaults or {})
    for p in PARAMS.values():
        if p.option not in scopes:
            continue
        shown_default = defaults.get(p.name, p.default)
        default = Unset(shown_default) if presettable else shown_default
        flag_name = "--" + p.name.replace("_", "-")
        if p.name == "shuffle":
            parser.add_argument(
                "--no-shuffle", dest="shuffle", action="store_false", default=default, help="keep the training order"
            )
        elif p.name == "optimizer":  # any case, checked when the config is built: one line, naming the choices
            parser.add_argument(
                flag_name, dest=p.name, default=default, metavar=p.metavar, help=p.help_text(shown_default)
            )
        elif isinstance(p.constraint, Options):  # argparse lists the choices
            parser.add_argument(
                flag_name,
                dest=p.name,
                default=default,
                choices=p.constraint.names(),
                help=p.help_text(shown_default, choices_listed=True),
            )
        else:
            parser.add_argument(
                flag_name,
                dest=p.name,
                default=default,
                type=option_type(p.name),
                metavar=p.metavar,
                help=p.help_text(shown_default),
            )


def given(value):
    """Was this option given on the command line (not its Unset default), and not as a default word?"""
    return not isinstance(value, Unset) and value is not None


def from_args(args, preset=None):
    """The TrainConfig keyword arguments an argparse namespace holds: those given on the command line,
    then the preset's (a dict), then the defaults."""
    names = {"verify": "verify_data"}  # --no-verify's dest, shared with evaluate and show
    values = {names.get(k, k): v for k, v in vars(args).items()}
    preset = preset or {}
    return {
        name: preset.get(name, values[name].value) if isinstance(values[name], Unset) else values[name]
        for name in PARAMS
        if name in values
    }
