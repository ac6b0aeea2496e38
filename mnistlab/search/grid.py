"""Search grids: which training parameters to vary, from --grid options or a
JSON/YAML file, checked up front so a typo fails before any training.

A grid is what scikit-learn's ParameterGrid takes: a mapping from parameter
name to a list of candidate values, or a list of such mappings. The names are
those of mnistlab.params' table that a grid may vary (params.GRID_NAMES); dashes may
stand for underscores.
"""

import json
import os

from mnistlab.catalog import OPTIMIZER_NAMES
from mnistlab.errors import UsageError
from mnistlab.params import GRID_NAMES, check

# The notebook's experiment, what bare `mnistlab search` runs: seven optimizers, 4-fold
# cross-validation, one epoch each, Keras 2's learning rates (the rest: the table's defaults).
NOTEBOOK_GRID = {"optimizer": list(OPTIMIZER_NAMES)}
NOTEBOOK_CV = 4
NOTEBOOK_PARAMS = {"epochs": 1, "optimizer_defaults": "notebook"}


def param_name(name, where):
    key = str(name).strip().replace("-", "_")
    if key not in GRID_NAMES:
        raise UsageError(f"unknown parameter {name!r} in {where}: choose from {', '.join(GRID_NAMES)}")
    return key


def check_params(params, where="parameters"):
    """A mapping of single values, names and values checked and normalised."""
    out = {}
    for name, value in params.items():
        key = param_name(name, where)
        out[key] = check(key, value, where)
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
            refuse_ranges(key, values, where)  # tune: ranges are for sampled studies
            checked[key] = [check(key, v, where) for v in values]
        out.append(checked)
    return out


def parse_grid_option(text):
    """One --grid option, "name=v1,v2,...", as (name, [values]) (values still text)."""
    name, sep, values = str(text).partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not name.strip() or not values.strip() or not all(items):
        raise UsageError(
            f"malformed --grid {text!r}: write NAME=VALUE,VALUE,... "
            "(for example --grid optimizer=SGD,Adam --grid lr=0.001,0.01)"
        )
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


def is_range(value):
    """A range of a sampled study (search.space): text "LOW..HIGH[:log]", a {low, high} mapping, or a
    Range. Here, below space.py, because a grid must recognise one to refuse it."""
    return (
        (isinstance(value, str) and ".." in value)
        or isinstance(value, dict)
        or (hasattr(value, "low") and hasattr(value, "high"))
    )


def refuse_ranges(key, values, where):
    """A grid lists values; a range (LOW..HIGH) needs a sampled study."""
    for value in values:
        if is_range(value):
            shown = value.text() if hasattr(value, "text") else value
            raise UsageError(
                f"{where}: {key}={shown} is a range: ranges need --strategy random or tpe (a grid lists values)"
            )


def load_grid_file(path):
    """A grid from a .json, .yaml or .yml file: a mapping or a list of mappings."""
    return check_grid(read_grid_file(path), f"grid file {path}")


def read_grid_file(path):
    """A .json, .yaml or .yml file's content, parsed but not checked (tune: spaces read it too)."""
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
    except Exception as e:
        detail = " ".join(str(e).split())
        raise UsageError(f"grid file {path} is not valid YAML: {detail}") from None
    return grid


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
