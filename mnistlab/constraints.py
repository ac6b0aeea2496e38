"""What a parameter's value may be, declared once: each constraint checks and normalises a value,
says what is wrong with a bad one, and describes its range for the help, from the same fields.

The idea is scikit-learn's parameter validation (its Interval and StrOptions), written small:

    Interval(int, 1, None)                     epochs: a whole number, at least 1
    Interval(float, 0, 1, closed="left")       dropout: in [0, 1)
    Options(("constant", "cosine"))            a name, matched without regard to case
    Flag()  Sizes()  Text()  KerasLoss(...)     true/false; layer sizes; free text; a Keras loss name
    Duration(optional=True)                    time_budget: 90s, 10m, 1h, as seconds

A check takes a value as the API, a config.json, a grid file or the command line gives it (text
included) and returns it normalised, or raises ValueError naming the parameter. optional=True: None
or a default word ("default", "none", "null") stands for the model's or optimizer's own, and checks
as None. Imports nothing heavy: the command line builds its parser from these before Keras loads.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mnistlab.text import number_text

DEFAULT_WORDS = ("default", "none", "null")  # "lr=default", "hidden=none": the model's or optimizer's own


def is_default_word(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in DEFAULT_WORDS)


class Constraint:
    """The base: `check(value, name)` (default words first, where optional) and `range` for the help
    ("" where the help has nothing to add to the parameter's own words)."""

    optional = False
    range = ""

    def check(self, value, name) -> Any:  # the normalised value: its type is the constraint's
        if self.optional and is_default_word(value):
            return None
        return self.normalise(value, name)

    def normalise(self, value, name) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of `type` (int: whole numbers only; float) between `low` and `high` (None: unbounded);
    closed: which ends belong, "left", "right", "both" or "neither"."""

    type: type
    low: float | None = None
    high: float | None = None
    closed: str = "left"
    optional: bool = False

    def __post_init__(self):
        if self.type not in (int, float) or self.closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"bad Interval({self.type}, closed={self.closed!r})")

    @property
    def range(self):
        left, right = self.closed in ("left", "both"), self.closed in ("right", "both")
        low, high = (None if b is None else number_text(b) for b in (self.low, self.high))
        if low is not None and high is not None:
            return f"in {'[' if left else '('}{low}, {high}{']' if right else ')'}"
        if low is not None:
            return f"at least {low}" if left else "positive" if self.low == 0 else f"more than {low}"
        if high is not None:
            return f"at most {high}" if right else f"less than {high}"
        return ""

    def contains(self, x):
        # Written so that NaN, which compares false with everything, is outside every interval.
        above = self.low is None or (x >= self.low if self.closed in ("left", "both") else x > self.low)
        below = self.high is None or (x <= self.high if self.closed in ("right", "both") else x < self.high)
        return above and below

    def normalise(self, value, name):
        x = self.number(value, name)
        if not self.contains(x):
            raise ValueError(f"{name} must be {self.range}, got {number_text(x)}")
        return x

    def number(self, value, name):
        try:
            if isinstance(value, bool):
                raise ValueError
            if self.type is float:
                return float(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value.strip()) if isinstance(value, str) else int(value)
        except (ValueError, TypeError, OverflowError):
            kind = "a whole number" if self.type is int else "a number"
            raise ValueError(f"{name} must be {kind}, got {value!r}") from None


@dataclass(frozen=True)
class Options(Constraint):
    """One of some names, matched without regard to case and returned as the names spell it.
    `choices`: the names, or a function giving them (names known only once their module loads)."""

    choices: Iterable[str] | Callable[[], Iterable[str]]  # a tuple of names, or a function giving them
    optional: bool = False

    def names(self):
        return list(self.choices() if callable(self.choices) else self.choices)

    @property
    def range(self):
        return f"one of {', '.join(self.names())}"

    def normalise(self, value, name):
        text = str(value).strip()
        for option in self.names():
            if option.lower() == text.lower():
                return option
        raise ValueError(f"unknown {name} {value!r}: choose {self.range}")


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")


@dataclass(frozen=True)
class Flag(Constraint):
    """True or false: a bool, 0 or 1, or the words true/false, yes/no, 1/0."""

    range = "true or false"

    def normalise(self, value, name):
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"{name} must be {self.range}, got {value!r}")


LAYER_SIZE = Interval(int, 1)


@dataclass(frozen=True)
class Sizes(Constraint):
    """Layer sizes, as a list of whole numbers from 1: [400, 100], 400, "400x100" (grid values, where
    commas separate candidates) or "400,100" (the option). Always optional: the model's own sizes."""

    optional = True

    def normalise(self, value, name):
        if isinstance(value, str):
            value = value.replace("x", ",").replace("X", ",").split(",")
        parts = value if isinstance(value, (list, tuple)) else [value]
        sizes = [LAYER_SIZE.check(p, f"{name} size") for p in parts if not (isinstance(p, str) and not p.strip())]
        if not sizes:
            raise ValueError(f"{name} needs at least one layer size")
        return sizes


DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h)?", re.IGNORECASE)
SECONDS_PER = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Duration(Constraint):
    """A span of time, in seconds: a positive number, or text as 90s, 10m, 1.5h (no unit: seconds)."""

    optional: bool = False
    range = "as 90s, 10m or 1h"

    def normalise(self, value, name):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = DURATION.fullmatch(str(value).strip())
            if not match:
                raise ValueError(f"{name} must be a duration {self.range}, got {value!r}")
            seconds = float(match.group(1)) * SECONDS_PER[(match.group(2) or "s").lower()]
        if not 0 < seconds < float("inf"):
            raise ValueError(f"{name} must be a positive duration {self.range}, got {value!r}")
        return seconds


@dataclass(frozen=True)
class Text(Constraint):
    """Any text (a folder, say), or None; no default words: a folder may be called "none"."""

    def check(self, value, name):
        return None if value is None else str(value)


@dataclass(frozen=True)
class KerasLoss(Constraint):
    """A Keras loss name: those in `known` are taken without Keras; any other is looked up in Keras."""

    known: tuple = ()

    def normalise(self, value, name):
        text = str(value).strip()
        if text in self.known:
            return text
        from mnistlab.backend import import_keras

        try:
            import_keras().losses.get(text)
        except (ValueError, TypeError):
            raise ValueError(f"unknown {name} {value!r}") from None
        return text
