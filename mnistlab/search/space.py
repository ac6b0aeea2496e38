"""Search spaces for sampled studies (--strategy random or tpe): each parameter a list of
candidates (categorical, as a grid's) or a range, "LOW..HIGH" (uniform) or "LOW..HIGH:log"
(log-uniform); integer ends give integers (hidden=32..512:log).

A space is {name: Range or [values]}, every name one that the parameter table lets a grid
vary, every end and value checked by that table's check before anything trains. It becomes
Optuna distributions, and a trial's suggestions become training parameters again.
Light at import: the command line checks spaces before Optuna or Keras load.
"""

import re
from dataclasses import dataclass

from mnistlab.errors import UsageError
from mnistlab.params import check
from mnistlab.search.grid import check_grid, is_range, param_name, parse_grid_option, read_grid_file

WHOLE = re.compile(r"\s*[+-]?\d+\s*")
LOG = ":log"

# What bare `mnistlab search --strategy random|tpe` samples: the notebook's seven optimizers,
# with the learning rate, batch size and dropout the notebook fixed.
DEFAULT_SPACE = {
    "optimizer": ["SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam"],
    "lr": "1e-4..1e-1:log",
    "batch_size": [32, 64, 128, 256],
    "dropout": "0.0..0.6",
}


@dataclass(frozen=True)
class Range:
    """A numeric range: uniform, or log-uniform (log=True); integer=True samples whole numbers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def text(self):
        return f"{self.low}..{self.high}" + (LOG if self.log else "")


def parse_range(name, value, where):
    """A Range from "LOW..HIGH[:log]" text, a {low, high, log} mapping or a Range, its ends
    checked as values of parameter `name`; empty, inverted or log-through-0 ranges refused."""
    if isinstance(value, Range):
        low, high, log, integer = value.low, value.high, value.log, value.integer
    elif isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(value):
            raise UsageError(f"{where}: range {name} needs low and high (and optionally log), got {value!r}")
        low, high, log = value["low"], value["high"], bool(value.get("log", False))
        integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    else:
        text = str(value).strip()
        log = text.endswith(LOG)
        ends = text[: -len(LOG)] if log else text
        low_text, _, high_text = ends.partition("..")
        if not low_text.strip() or not high_text.strip() or ".." in high_text:
            raise UsageError(f"{where}: malformed range {name}={text}: write LOW..HIGH or LOW..HIGH:log")
        integer = bool(WHOLE.fullmatch(low_text) and WHOLE.fullmatch(high_text))
        low, high = low_text.strip(), high_text.strip()
    low, high = (end_value(name, end, where) for end in (low, high))
    integer = integer or all(isinstance(v, int) for v in (low, high))  # batch_size, epochs, hidden...
    if not low < high:
        raise UsageError(f"{where}: range {name}={low}..{high} is empty or inverted: LOW must be below HIGH")
    if log and low <= 0:
        raise UsageError(f"{where}: log range {name}={low}..{high}:log must stay above 0")
    return Range(int(low) if integer else float(low), int(high) if integer else float(high), log, integer)


def end_value(name, end, where):
    """One end of a range as the number it stands for, checked as a value of `name`."""
    value = check(name, end, where)
    if isinstance(value, list) and len(value) == 1:  # layer sizes: a range gives one layer
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: {name} takes a list of values, not a range")
    return value


def check_space(space, where="search space"):
    """{name: Range or [checked values]} from a mapping of names to lists, range text or Ranges."""
    if isinstance(space, list):
        if len(space) != 1:
            raise UsageError(
                f"{where}: a random or tpe study takes one mapping of parameters, not a list of {len(space)}"
            )
        space = space[0]
    if not isinstance(space, dict) or not space:
        raise UsageError(f"{where} must map parameter names to lists of values or ranges, got {space!r}")
    out = {}
    for name, values in space.items():
        key = param_name(name, where)
        if key in out:
            raise UsageError(f"parameter {key} given twice in {where}")
        if is_range(values):
            out[key] = parse_range(key, values, where)
        else:
            out[key] = check_grid({key: values}, where)[0][key]
    return out


def build_space(options=None, grid_file=None):
    """The space a command line asks for: the file's, then --grid options (lists or ranges) over it.

    Neither given: DEFAULT_SPACE.
    """
    space = {}
    if grid_file:
        space = check_space(read_grid_file(grid_file), f"grid file {grid_file}")
    for text in options or ():
        name, items = parse_grid_option(text)
        if any(is_range(item) for item in items) and len(items) > 1:
            raise UsageError(f"--grid {text}: a range stands alone (NAME=LOW..HIGH), not in a list")
        space |= check_space({name: items[0] if is_range(items[0]) else items}, f"--grid {text}")
    return space or check_space(DEFAULT_SPACE, "default search space")


def choice(value):
    """A candidate as Optuna stores a categorical choice: layer sizes as text (400x100)."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return value


def distributions(space):
    """{name: Optuna distribution} for a checked space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        if isinstance(spec, Range) and spec.integer:
            out[name] = IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        elif isinstance(spec, Range):
            out[name] = FloatDistribution(spec.low, spec.high, log=spec.log)
        else:
            out[name] = CategoricalDistribution([choice(v) for v in spec])
    return out


def suggest(trial, space):
    """A trial's training parameters: each drawn by the trial (or fixed, for an enqueued or retried
    one) and turned back into what the parameter table takes (400x100 -> [400, 100])."""
    return {name: check(name, suggested(trial, name, dist)) for name, dist in distributions(space).items()}


def suggested(trial, name, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def space_settings(space):
    """The space as JSON: lists as they are, ranges as their text (search.json)."""
    return {name: spec.text() if isinstance(spec, Range) else [choice(v) for v in spec] for name, spec in space.items()}
