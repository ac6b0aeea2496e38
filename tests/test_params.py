"""mnistlab.params is the one table of training parameters: TrainConfig, the command line and the
search grid all take their names, defaults and checks from it."""
import argparse
from dataclasses import fields

import pytest

from mnistlab.cli import build_parser
from mnistlab.errors import UsageError
from mnistlab.params import GRID_NAMES, PARAMS, from_args
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


@pytest.mark.parametrize("name, bad, message", [
    ("epochs", "0", "epochs must be at least 1"),
    ("batch_size", "1.5", "batch_size must be a whole number"),
    ("lr", "-1", "lr must be positive"),
    ("dropout", "1", "dropout must be in [0, 1)"),
    ("hidden", "400xbig", "hidden size must be a whole number"),
    ("seed", "-3", "seed must be at least 0"),
])
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
