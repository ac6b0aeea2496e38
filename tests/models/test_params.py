"""mnistlab.params is the one table of training parameters: TrainConfig, the command line and the
search grid all take their names, defaults and checks from it; each parameter's constraint gives
its check, its error message and its help's range, and the help's per-model defaults are the
catalog's."""

import argparse
import re
from dataclasses import fields

import pytest

from mnistlab.catalog import RECIPES, SIZES
from mnistlab.cli import build_parser
from mnistlab.constraints import Flag, Interval, Options, Sizes
from mnistlab.errors import UsageError
from mnistlab.params import GRID_NAMES, PARAMS, from_args, shown
from mnistlab.search.estimator import MnistClassifier
from mnistlab.search.grid import NOTEBOOK_PARAMS, build_grid, check_params
from mnistlab.training.config import TrainConfig


def parsed(*argv):
    return build_parser().parse_args(list(argv))


def test_trainconfig_is_the_table():
    config_fields = [f for f in fields(TrainConfig) if f.name != "extra"]
    assert [f.name for f in config_fields] == list(PARAMS)
    assert {f.name: f.default for f in config_fields} == {name: p.default for name, p in PARAMS.items()}


def test_train_options_are_the_table_with_its_defaults():
    config = TrainConfig(**from_args(parsed("train")))
    assert config == TrainConfig()
    options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert {name for name, p in PARAMS.items() if p.option} <= options


def test_search_options_override_only_what_the_notebook_changes():
    args = parsed("search")
    given = {k: v for k, v in from_args(args).items() if k in GRID_NAMES}
    assert given == {name: NOTEBOOK_PARAMS.get(name, PARAMS[name].default) for name in GRID_NAMES}


def test_the_estimator_takes_the_grid_names_with_the_table_defaults():
    assert MnistClassifier().get_params() == {name: PARAMS[name].default for name in GRID_NAMES} | {"verbose": 0}
    assert MnistClassifier(epochs=3, optimizer="sgd").train_config() == TrainConfig(epochs=3, optimizer="SGD")


def test_values_are_normalised_alike_everywhere():
    assert TrainConfig(hidden="400x100", optimizer="nadam", lr="default").hidden == [400, 100]
    assert parsed("train", "--hidden", "400,100").hidden == [400, 100]
    assert build_grid(["hidden=400x100,50"]) == [{"hidden": [[400, 100], [50]]}]
    assert check_params({"optimizer": "nadam", "batch-size": "32"}) == {"optimizer": "Nadam", "batch_size": 32}


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("epochs", "0", "epochs must be at least 1"),
        ("batch_size", "1.5", "batch_size must be a whole number"),
        ("lr", "-1", "lr must be positive"),
        ("dropout", "1", "dropout must be in [0, 1)"),
        ("hidden", "400xbig", "hidden size must be a whole number"),
        ("seed", "-3", "seed must be at least 0"),
    ],
)
def test_a_bad_value_is_refused_the_same_way_by_config_cli_and_grid(name, bad, message, capsys):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(")", r"\)")):
        TrainConfig(**{name: bad})
    with pytest.raises(SystemExit) as e:
        parsed("train", "--" + name.replace("_", "-"), bad)
    assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(UsageError, match="bad value for " + name):
        build_grid([f"{name}={bad}"])


def test_the_options_go_on_any_parser():
    parser = argparse.ArgumentParser()
    from mnistlab.params import add_options

    add_options(parser, ("shared", "train"))
    assert parser.parse_args(["--model", "cnn", "--no-shuffle"]).shuffle is False


def option_help(command, dest):
    """The help text argparse shows for `command`'s option `dest`."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    (action,) = [a for a in sub._actions if a.dest == dest]
    return action.help


def test_one_constraint_gives_the_check_the_message_and_the_help_range():
    dropout = PARAMS["dropout"].constraint
    assert dropout.range == "in [0, 1)"
    assert "dropout rate (in [0, 1); default: 0.5)" == option_help("train", "dropout")
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\), got 1$"):
        PARAMS["dropout"].check("1")
    for p in PARAMS.values():  # each range is the constraint's: none typed into a help by hand
        assert not re.search(r"[\[(]\d|\d[\])]|at least|positive|one of", p.help), p.name
        if isinstance(p.constraint, Interval) and p.option:
            assert p.constraint.range in option_help("train", p.name), p.name


@pytest.mark.parametrize(
    "constraint, accepted, refused, range_text",
    [
        (
            Interval(int, 1),
            {"3": 3, 2.0: 2, " 7 ": 7},
            {"0": "at least 1, got 0", "1.5": "a whole number", True: "whole"},
            "at least 1",
        ),
        (
            Interval(float, 0, closed="neither"),
            {"1e-3": 0.001, 2: 2.0},
            {"0": "positive, got 0", "nan": "positive"},
            "positive",
        ),
        (Interval(float, 0, 1, closed="right"), {"1": 1.0}, {"0": r"in \(0, 1\], got 0", "x": "a number"}, "in (0, 1]"),
        (Interval(float, 0, 0.5, closed="both"), {"0": 0.0, "0.5": 0.5}, {"0.6": r"in \[0, 0.5\]"}, "in [0, 0.5]"),
        (
            Options(("SGD", "Adam")),
            {"sgd": "SGD", " ADAM ": "Adam"},
            {"adamw": "unknown x 'adamw': choose one of SGD, Adam"},
            "one of SGD, Adam",
        ),
        (Flag(), {"yes": True, "0": False, 1: True}, {"maybe": "true or false"}, "true or false"),
        (
            Sizes(),
            {"400x100": [400, 100], 50: [50], "default": None},
            {"0": "x size must be at least 1", "x": "needs"},
            "",
        ),
    ],
)
def test_constraints(constraint, accepted, refused, range_text):
    assert {value: constraint.check(value, "x") for value in accepted} == accepted
    for value, message in refused.items():
        with pytest.raises(ValueError, match=message):
            constraint.check(value, "x")
    assert constraint.range == range_text


def test_optional_means_the_model_or_optimizer_own():
    assert Interval(float, 0, closed="neither", optional=True).check("default", "lr") is None
    assert Options(("a",), optional=True).check(None, "x") is None
    with pytest.raises(ValueError, match="must be a number"):
        Interval(float, 0).check("default", "dropout")
    assert {name for name, p in PARAMS.items() if p.default is None and p.constraint.optional} == {
        "lr",
        "hidden",
        "filters",
        "augment",
        "schedule",
        "label_smoothing",
        "weight_decay",
        "ema",
        "validation_split",
        "target_accuracy",
        "time_budget",
    }


def per_model_in_help(help_text, prefix):
    """The {model: value text} a help's "default: <prefix>v for a and b, w for c" names, read back."""
    listed = help_text.partition(f"default: {prefix}")[2].rstrip(")")
    found = {}
    for group in re.split(r", (?=\S+ for )", listed):
        value, _, models = group.partition(" for ")
        found |= {model: value for model in re.split(r", | and ", models)}
    return found


def test_the_help_says_each_model_own_recipe_and_sizes_as_the_catalog_holds_them():
    for setting in ("augment", "schedule", "label_smoothing", "weight_decay"):
        expected = {model: shown(recipe[setting]) for model, recipe in RECIPES.items()}
        assert per_model_in_help(option_help("train", setting), "the model's recipe: ") == expected, setting
    for size in ("hidden", "filters"):
        expected = {model: shown(sizes[size]) for model, sizes in SIZES.items() if size in sizes}
        assert per_model_in_help(option_help("train", size), "the model's: ") == expected, size


def test_search_help_names_every_grid_parameter():
    epilog = build_parser()._subparsers._group_actions[0].choices["search"].epilog
    assert ", ".join(GRID_NAMES) in " ".join(epilog.split())
