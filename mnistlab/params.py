"""The training parameters, once: name, check, default, help.

`TrainConfig` (training/config.py), the command line's training options (cli/) and the search
grid's validation (search/grid.py) all come from PARAMS, so a parameter is added, checked or
documented in one place. Each check takes a value as the API, a config.json, a grid file or the
command line gives it (text included), returns it normalised, and raises ValueError saying what
is wrong. Light at import: the CLI builds its parser from this table before Keras is loaded.
"""
from dataclasses import dataclass

from mnistlab.errors import UsageError

DEFAULT_WORDS = ("default", "none", "null")  # "lr=default", "hidden=none": the model's or optimizer's own


def is_default_word(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in DEFAULT_WORDS)


def whole(name, minimum):
    def check(value):
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(value.strip()) if isinstance(value, str) else int(value)
        except (ValueError, TypeError):
            raise ValueError(f"{name} must be a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {number}")
        return number
    return check


def number(name, value):
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def one_of(name, choices, optional=False):
    """A check against a list of names known only once their module is loaded (lazily);
    optional: None or "default" stands for the built-in choice."""
    def check(value):
        if optional and is_default_word(value):
            return None
        options = choices()
        text = str(value).strip()
        for option in options:
            if option.lower() == text.lower():
                return option
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(options)}")
    return check


def flag(name):
    def check(value):
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return check


def ranged(name, ok, requirement, optional=False):
    """A number that must satisfy `ok`; optional: None or "default" stands for the built-in choice."""
    def check(value):
        if optional and is_default_word(value):
            return None
        x = number(name, value)
        if not ok(x):
            raise ValueError(f"{name} must be {requirement}, got {value!r}")
        return x
    return check


lr = ranged("lr", lambda rate: rate > 0, "positive", optional=True)
dropout = ranged("dropout", lambda rate: 0 <= rate < 1, "in [0, 1)")
validation_split = ranged("validation split", lambda share: 0 < share < 1, "between 0 and 1", optional=True)
augment = ranged("augment", lambda size: 0 <= size <= 0.5, "in [0, 0.5]", optional=True)
warmup = ranged("warmup", lambda share: 0 <= share < 1, "in [0, 1)")
label_smoothing = ranged("label_smoothing", lambda share: 0 <= share < 1, "in [0, 1)", optional=True)
weight_decay = ranged("weight_decay", lambda rate: rate >= 0, "at least 0", optional=True)
target_accuracy = ranged("target_accuracy", lambda share: 0 < share <= 1, "in (0, 1]", optional=True)


def sizes(name):
    """Layer sizes: [400, 100], 400, "400x100" (grid values, where commas separate candidates)
    or "400,100" (the option); None or "default" keeps the model's own."""
    def check(value):
        if is_default_word(value):
            return None
        if isinstance(value, str):
            value = value.replace("x", ",").replace("X", ",").split(",")
        parts = value if isinstance(value, (list, tuple)) else [value]
        numbers = [whole(f"{name} size", 1)(p) for p in parts if not (isinstance(p, str) and not p.strip())]
        if not numbers:
            raise ValueError(f"{name} needs at least one layer size")
        return numbers
    return check


hidden = sizes("hidden")
filters = sizes("filters")


def loss(value):
    """A Keras loss name. The default needs no Keras; any other name is looked up in Keras."""
    name = str(value).strip()
    if name == PARAMS["loss"].default:
        return name
    from mnistlab.backend import import_keras

    try:
        import_keras().losses.get(name)
    except (ValueError, TypeError):
        raise ValueError(f"unknown loss {value!r}") from None
    return name


def optional_text(value):
    return None if value is None else str(value)


def model_names():
    from mnistlab.models import MODELS

    return list(MODELS)


def optimizer_names():
    from mnistlab.optimizers import NAMES

    return list(NAMES)


def default_sets():
    from mnistlab.optimizers import DEFAULT_LR

    return list(DEFAULT_LR)


def dataset_names():
    from mnistlab.data.registry import DATASETS

    return list(DATASETS)


ENGINES = ("auto", "fast", "keras")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Param:
    name: str
    check: callable          # value -> normalised value, or ValueError saying what is wrong
    default: object
    help: str
    grid: bool = True        # may a search grid vary it
    option: str = "shared"   # on the command line: "shared" (train and search), "train" (train only),
                             # or None (given through --dataset/--data-dir/--no-verify, or the API only)
    metavar: str | None = None
    choices: callable = None  # the names a text value may take (for --help)


PARAMS = {p.name: p for p in (
    Param("model", one_of("model", model_names), "dnn", "the network: {choices}", choices=model_names),
    Param("dataset", one_of("dataset", dataset_names), "mnist", "the dataset: {choices}", grid=False, option=None),
    Param("epochs", whole("epochs", 1), 10, "passes over the training set"),
    Param("batch_size", whole("batch_size", 1), 64, "samples per training step"),
    Param("optimizer", one_of("optimizer", optimizer_names), "Adam", "one of {choices}", metavar="NAME",
          choices=optimizer_names),
    Param("lr", lr, None, "learning rate (default: the optimizer's under --optimizer-defaults)"),
    Param("optimizer_defaults", one_of("optimizer defaults", default_sets), "keras",
          "whose optimizer defaults: keras (Keras 3) or notebook (Keras 2's, as the notebook had)",
          choices=default_sets),
    Param("loss", loss, "categorical_crossentropy", "a Keras loss name", metavar="NAME"),
    Param("hidden", hidden, None, "hidden dense sizes, 400,100 (default: dnn 400,100; cnn 320)", metavar="N,N"),
    Param("filters", filters, None, "convolution filters per stage, 32,64 (default: cnn 10,20; convnet 32,64; "
          "resnet 16,32,64)", metavar="N,N"),
    Param("dropout", dropout, 0.5, "dropout rate, in [0, 1)"),
    Param("augment", augment, None, "random training-time shifts and zooms of up to this fraction of the image, "
          "rotations up to this x 90 degrees; 0: none (default: the model's recipe: convnet, resnet 0.1; "
          "dnn, cnn 0)", metavar="FRAC"),
    Param("flip", flag("flip"), False, "mirror half the training images left to right each epoch (for clothes, "
          "not digits)"),
    Param("schedule", one_of("schedule", lambda: list(SCHEDULES), optional=True), None,
          "learning rate schedule: constant, or cosine (warm-up, then cosine decay to 0) "
          "(default: the model's recipe: convnet, resnet cosine; dnn, cnn constant)",
          choices=lambda: list(SCHEDULES)),
    Param("warmup", warmup, 0.1, "with --schedule cosine: the fraction of training steps that warm up", metavar="FRAC"),
    Param("label_smoothing", label_smoothing, None, "label smoothing of the crossentropy loss, in [0, 1) "
          "(default: the model's recipe: convnet, resnet 0.1; dnn, cnn 0)", metavar="FRAC"),
    Param("weight_decay", weight_decay, None, "decoupled weight decay of the optimizer "
          "(default: the model's recipe: convnet, resnet 0.01; dnn, cnn 0)", metavar="RATE"),
    Param("seed", whole("seed", 0), 0, "random seed: weights, shuffling, dropout"),
    Param("validation_split", validation_split, None,
          "validate on this held-out fraction of the training set instead of the test set",
          grid=False, option="train", metavar="FRAC"),
    Param("shuffle", flag("shuffle"), True, "shuffle the training set each epoch", grid=False, option="train"),
    Param("data_dir", optional_text, None, "folder holding the dataset's IDX files", grid=False, option=None),
    Param("verify_data", flag("verify_data"), True, "check the files against the published MD5s",
          grid=False, option=None),
    Param("target_accuracy", target_accuracy, None,
          "stop at the first epoch whose validation accuracy reaches this, recording the time it took",
          grid=False, option="train", metavar="ACC"),
    Param("tta", whole("tta", 0), 0, "test-time augmentation: average the test predictions over this many "
          "copies of each image transformed as --augment and --flip transform training's, and the image itself; "
          "recorded beside the plain test score (metrics.json: tta_test_accuracy)", grid=False, option="train",
          metavar="N"),
    Param("engine", one_of("engine", lambda: list(ENGINES)), "auto",
          "auto: compiled whole-epoch training where the model allows, else Keras' fit; fast: insist on it; "
          "keras: always Keras' own fit", grid=False, option="train", choices=lambda: list(ENGINES)),
)}

GRID_NAMES = tuple(name for name, p in PARAMS.items() if p.grid)


def check(name, value, where=None):
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
        text = p.help.format(choices=", ".join(p.choices())) if p.choices else p.help
        shown = "" if shown_default is None else f" (default: {shown_default})"
        flag_name = "--" + p.name.replace("_", "-")
        if p.name == "shuffle":
            parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=default,
                                help="keep the training order")
        elif p.name == "optimizer":  # checked when the config is built: one line, naming the choices
            parser.add_argument(flag_name, dest=p.name, default=default, metavar=p.metavar, help=text + shown)
        elif p.name in ("model", "optimizer_defaults", "engine", "schedule"):
            parser.add_argument(flag_name, dest=p.name, default=default, choices=p.choices(), help=text + shown)
        else:
            parser.add_argument(flag_name, dest=p.name, default=default, type=option_type(p.name),
                                metavar=p.metavar, help=text + shown)


def from_args(args, preset=None):
    """The TrainConfig keyword arguments an argparse namespace holds: those given on the command line,
    then the preset's (a dict), then the defaults."""
    names = {"verify": "verify_data"}  # --no-verify's dest, shared with evaluate and show
    values = {names.get(k, k): v for k, v in vars(args).items()}
    preset = preset or {}
    return {name: preset.get(name, values[name].value) if isinstance(values[name], Unset) else values[name]
            for name in PARAMS if name in values}
