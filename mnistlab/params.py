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


def one_of(name, choices):
    """A check against a list of names known only once their module is loaded (lazily)."""
    def check(value):
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


def hidden(value):
    """Hidden layer sizes: [400, 100], 400, "400x100" (grid values, where commas separate candidates)
    or "400,100" (the --hidden option); None or "default" keeps the model's own."""
    if is_default_word(value):
        return None
    if isinstance(value, str):
        value = value.replace("x", ",").replace("X", ",").split(",")
    parts = value if isinstance(value, (list, tuple)) else [value]
    sizes = [whole("hidden size", 1)(p) for p in parts if not (isinstance(p, str) and not p.strip())]
    if not sizes:
        raise ValueError("hidden needs at least one layer size")
    return sizes


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
    Param("dropout", dropout, 0.5, "dropout rate, in [0, 1)"),
    Param("seed", whole("seed", 0), 0, "random seed: weights, shuffling, dropout"),
    Param("validation_split", validation_split, None,
          "validate on this held-out fraction of the training set instead of the test set",
          grid=False, option="train", metavar="FRAC"),
    Param("shuffle", flag("shuffle"), True, "shuffle the training set each epoch", grid=False, option="train"),
    Param("data_dir", optional_text, None, "folder holding the dataset's IDX files", grid=False, option=None),
    Param("verify_data", flag("verify_data"), True, "check the files against the published MD5s",
          grid=False, option=None),
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


def add_options(parser, scopes=("shared",), defaults=None):
    """The table's options for `scopes` on an argparse parser; `defaults` overrides some defaults
    (a search trains 1 epoch, with the notebook's optimizer defaults)."""
    defaults = dict(defaults or {})
    for p in PARAMS.values():
        if p.option not in scopes:
            continue
        default = defaults.get(p.name, p.default)
        text = p.help.format(choices=", ".join(p.choices())) if p.choices else p.help
        shown = "" if default is None else f" (default: {default})"
        flag_name = "--" + p.name.replace("_", "-")
        if p.name == "shuffle":
            parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=default,
                                help="keep the training order")
        elif p.name == "optimizer":  # checked when the config is built: one line, naming the choices
            parser.add_argument(flag_name, dest=p.name, default=default, metavar=p.metavar, help=text + shown)
        elif p.name in ("model", "optimizer_defaults", "engine"):
            parser.add_argument(flag_name, dest=p.name, default=default, choices=p.choices(), help=text + shown)
        else:
            parser.add_argument(flag_name, dest=p.name, default=default, type=option_type(p.name),
                                metavar=p.metavar, help=text + shown)


def from_args(args):
    """The TrainConfig keyword arguments an argparse namespace holds."""
    names = {"verify": "verify_data"}  # --no-verify's dest, shared with evaluate and show
    values = {names.get(k, k): v for k, v in vars(args).items()}
    return {name: values[name] for name in PARAMS if name in values}
