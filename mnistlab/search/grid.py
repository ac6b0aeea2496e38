"""Search grids: which training parameters to vary, from --grid options or a
JSON/YAML file, checked up front so a typo fails before any training.

A grid is what scikit-learn's ParameterGrid takes: a mapping from parameter
name to a list of candidate values, or a list of such mappings. The names are
TrainConfig's (model, optimizer, lr, batch_size, epochs, hidden, dropout,
optimizer_defaults, seed, loss); dashes may stand for underscores.
"""
import json
import os

from mnistlab.errors import UsageError
from mnistlab.optimizers import DEFAULT_LR, NAMES, canonical_name

# The notebook's experiment, what bare `mnistlab search` runs: seven optimizers,
# 4-fold cross-validation, one epoch each, batch 64, the DNN, Keras 2's learning rates.
NOTEBOOK_GRID = {"optimizer": list(NAMES)}
NOTEBOOK_CV = 4
NOTEBOOK_PARAMS = {"model": "dnn", "epochs": 1, "batch_size": 64, "optimizer_defaults": "notebook"}

DEFAULT_WORDS = ("default", "none", "null")  # "lr=default" or "hidden=default": the model's own


def _int(value, name, minimum):
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


def _float(value, name):
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def model_name(value):
    from mnistlab.models import MODELS

    name = str(value).strip().lower()
    if name not in MODELS:
        raise ValueError(f"unknown model {value!r}: choose one of {', '.join(MODELS)}")
    return name


def optimizer(value):
    return canonical_name(str(value).strip())


def lr(value):
    if value is None or str(value).strip().lower() in DEFAULT_WORDS:
        return None
    rate = _float(value, "lr")
    if not rate > 0:
        raise ValueError(f"lr must be positive, got {value!r}")
    return rate


def batch_size(value):
    return _int(value, "batch_size", 1)


def epochs(value):
    return _int(value, "epochs", 1)


def seed(value):
    return _int(value, "seed", 0)


def hidden(value):
    """Hidden layer sizes: [400, 100], 400, or on the command line "400x100"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in DEFAULT_WORDS):
        return None
    parts = value.lower().split("x") if isinstance(value, str) else value
    parts = parts if isinstance(parts, (list, tuple)) else [parts]
    sizes = [_int(p, "hidden size", 1) for p in parts]
    if not sizes:
        raise ValueError("hidden needs at least one layer size")
    return sizes


def dropout(value):
    rate = _float(value, "dropout")
    if not 0 <= rate < 1:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")
    return rate


def optimizer_defaults(value):
    name = str(value).strip().lower()
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown optimizer defaults {value!r}: choose one of {', '.join(DEFAULT_LR)}")
    return name


def loss(value):
    from mnistlab.backend import import_keras

    name = str(value).strip()
    try:
        import_keras().losses.get(name)
    except (ValueError, TypeError):
        raise ValueError(f"unknown loss {value!r}") from None
    return name


# Every parameter a grid may vary, with the function that checks and normalises one value.
PARAMS = {"model": model_name, "optimizer": optimizer, "lr": lr, "batch_size": batch_size,
          "epochs": epochs, "hidden": hidden, "dropout": dropout,
          "optimizer_defaults": optimizer_defaults, "seed": seed, "loss": loss}


def param_name(name, where):
    key = str(name).strip().replace("-", "_")
    if key not in PARAMS:
        raise UsageError(f"unknown parameter {name!r} in {where}: choose from {', '.join(PARAMS)}")
    return key


def check_value(name, value, where):
    try:
        return PARAMS[name](value)
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad value for {name} in {where}: {e}") from None


def check_params(params, where="parameters"):
    """A mapping of single values, names and values checked and normalised."""
    out = {}
    for name, value in params.items():
        key = param_name(name, where)
        out[key] = check_value(key, value, where)
    return out


def check_grid(grid, where="grid"):
    """A ParameterGrid-ready list of {name: [values]} mappings, every value checked."""
    subgrids = grid if isinstance(grid, list) else [grid]
    if not subgrids:
        raise UsageError(f"{where} is empty")
    out = []
    for sub in subgrids:
        if not isinstance(sub, dict) or not sub:
            raise UsageError(f"{where} must map parameter names to lists of values, got {sub!r}")
        checked = {}
        for name, values in sub.items():
            key = param_name(name, where)
            if key in checked:
                raise UsageError(f"parameter {key} given twice in {where}")
            values = values if isinstance(values, list) else [values]
            if not values:
                raise UsageError(f"{where}: {key} has no values")
            checked[key] = [check_value(key, v, where) for v in values]
        out.append(checked)
    return out


def parse_grid_option(text):
    """One --grid option, "name=v1,v2,...", as (name, [values]) (values still text)."""
    name, sep, values = str(text).partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not name.strip() or not values.strip() or not all(items):
        raise UsageError(f"malformed --grid {text!r}: write NAME=VALUE,VALUE,... "
                         "(for example --grid optimizer=SGD,Adam --grid lr=0.001,0.01)")
    return name.strip(), items


def grid_from_options(options):
    """The --grid options as one grid mapping (unchecked; check_grid does that)."""
    grid = {}
    for text in options or ():
        name, values = parse_grid_option(text)
        key = param_name(name, f"--grid {text}")
        if key in grid:
            raise UsageError(f"--grid {key} given twice: list all its values in one option, comma-separated")
        grid[key] = values
    return grid


def load_grid_file(path):
    """A grid from a .json, .yaml or .yml file: a mapping or a list of mappings."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".yaml", ".yml"):
        raise UsageError(f"grid file {path}: name must end in .json, .yaml or .yml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read grid file {path}: {e.strerror or e}") from None
    try:
        if ext == ".json":
            grid = json.loads(text)
        else:
            import yaml

            grid = yaml.safe_load(text)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"grid file {path} is not valid JSON: {e}") from None
    except Exception as e:  # noqa: BLE001  (yaml.YAMLError and its kin)
        detail = " ".join(str(e).split())
        raise UsageError(f"grid file {path} is not valid YAML: {detail}") from None
    return check_grid(grid, f"grid file {path}")


def build_grid(options=None, grid_file=None):
    """The grid a command line asks for: the file's, with --grid options laid over each part.

    Neither given: the notebook's grid of seven optimizers.
    """
    from_options = grid_from_options(options)
    if grid_file:
        extra = check_grid(from_options, "--grid")[0] if from_options else {}
        return [sub | extra for sub in load_grid_file(grid_file)]
    if from_options:
        return check_grid(from_options, "--grid")
    return check_grid(dict(NOTEBOOK_GRID), "notebook grid")
