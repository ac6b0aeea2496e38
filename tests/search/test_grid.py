"""Search grids from --grid options and files, and the one-line usage errors
for what is wrong with them. No training here."""

import json

import numpy as np
import pytest

from mnistlab.catalog import OPTIMIZER_NAMES
from mnistlab.cli import main
from mnistlab.errors import UsageError
from mnistlab.search.grid import build_grid, load_grid_file
from mnistlab.search.run import plan_search


def test_bare_search_is_the_notebook_grid():
    assert build_grid() == [{"optimizer": list(OPTIMIZER_NAMES)}]
    assert len(OPTIMIZER_NAMES) == 7


def test_grid_options_are_checked_and_normalised():
    grid = build_grid(
        [
            "optimizer=sgd,ADAM",
            "lr=0.001,1e-2,default",
            "batch-size=32,64",
            "hidden=400x100,50",
            "dropout=0,0.25",
            "model=CNN",
            "optimizer_defaults=keras",
        ]
    )
    assert grid == [
        {
            "optimizer": ["SGD", "Adam"],
            "lr": [0.001, 0.01, None],
            "batch_size": [32, 64],
            "hidden": [[400, 100], [50]],
            "dropout": [0.0, 0.25],
            "model": ["cnn"],
            "optimizer_defaults": ["keras"],
        }
    ]


@pytest.mark.parametrize(
    "options, message",
    [
        (["learning_rate=0.1"], "unknown parameter 'learning_rate'"),
        (["optimizer"], "malformed --grid 'optimizer'"),
        (["optimizer="], "malformed"),
        (["=SGD"], "malformed"),
        (["optimizer=SGD,,Adam"], "malformed"),
        (["optimizer=SGD", "optimizer=Adam"], "given twice"),
        (["optimizer=AdamW9"], "unknown optimizer 'AdamW9'"),
        (["lr=fast"], "lr must be a number"),
        (["lr=-1"], "lr must be positive"),
        (["epochs=0"], "epochs must be at least 1"),
        (["batch_size=1.5"], "batch_size must be a whole number"),
        (["hidden=400xbig"], "hidden size must be a whole number"),
        (["dropout=1"], "dropout must be in [0, 1)"),
        (["model=vgg"], "unknown model 'vgg'"),
        (["loss=not_a_loss"], "unknown loss 'not_a_loss'"),
    ],
)
def test_bad_grid_options(options, message):
    with pytest.raises(UsageError) as e:
        build_grid(options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_grid_files_json_and_yaml(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"optimizer": ["SGD", "Adam"], "hidden": [[64, 32], [16]]}))
    (tmp_path / "g.yaml").write_text("- optimizer: [SGD, Adam]\n  lr: [0.01, 0.1]\n- optimizer: Adadelta\n")
    assert load_grid_file(tmp_path / "g.json") == [{"optimizer": ["SGD", "Adam"], "hidden": [[64, 32], [16]]}]
    assert load_grid_file(tmp_path / "g.yaml") == [
        {"optimizer": ["SGD", "Adam"], "lr": [0.01, 0.1]},
        {"optimizer": ["Adadelta"]},
    ]
    # --grid options given with a file are laid over each of its parts
    assert build_grid(["epochs=2,3"], tmp_path / "g.yaml") == [
        {"optimizer": ["SGD", "Adam"], "lr": [0.01, 0.1], "epochs": [2, 3]},
        {"optimizer": ["Adadelta"], "epochs": [2, 3]},
    ]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("g.json", '{"optimizer": ["SGD",', "not valid JSON"),
        ("g.yaml", "optimizer: [SGD, Adam\n", "not valid YAML"),
        ("g.json", "[]", "is empty"),
        ("g.json", '["SGD"]', "must map parameter names to lists of values"),
        ("g.json", '{"optimizer": []}', "optimizer has no values"),
        ("g.yaml", "momentum: [0.9]\n", "unknown parameter 'momentum'"),
        ("g.json", '{"epochs": [1, "two"]}', "epochs must be a whole number"),
        ("g.txt", "{}", "must end in .json, .yaml or .yml"),
    ],
)
def test_bad_grid_files(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError) as e:
        load_grid_file(tmp_path / name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_grid_file():
    with pytest.raises(UsageError, match="cannot read grid file"):
        load_grid_file("/nonexistent/grid.json")


@pytest.mark.parametrize("cv", [1, 0, 11, 2.5, True])
def test_cv_out_of_range(cv):
    x, y = np.zeros((10, 28, 28), np.uint8), np.arange(10) % 2
    with pytest.raises(UsageError, match="cv must be a whole number from 2 to the number of training images"):
        plan_search(x, y, {"optimizer": ["SGD"]}, cv=cv)


def test_plan_fills_in_the_notebook_settings():
    x, y = np.zeros((8, 28, 28), np.uint8), np.arange(8) % 2
    plan = plan_search(x, y, {"lr": [0.1, 0.2]}, cv=2, params={"optimizer": "sgd"})
    assert plan.params["optimizer"] == "SGD" and plan.params["epochs"] == 1
    assert plan.params["optimizer_defaults"] == "notebook" and plan.params["batch_size"] == 64
    assert [plan.full_params(i)["lr"] for i in range(2)] == [0.1, 0.2]
    # a fit's record key changes with anything that can change its score
    key = plan.spec(0, 0)
    assert key != plan.spec(0, 1) and key != plan.spec(1, 0)
    assert key != plan_search(x, y, {"lr": [0.1]}, cv=4, params={"optimizer": "sgd"}).spec(0, 0)
    assert key != plan_search(x[::-1].copy() + 1, y, {"lr": [0.1]}, cv=2, params={"optimizer": "sgd"}).spec(0, 0)
    assert key == plan_search(x, y, {"lr": [0.1]}, cv=2, params={"optimizer": "SGD"}).spec(0, 0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "momentum=0.9"], "unknown parameter 'momentum'"),
        (["--grid", "optimizer:SGD"], "malformed --grid"),
        (["--cv", "1"], "cv must be a whole number from 2"),
        (["--cv", "300"], "cv must be a whole number from 2 to the number of training images (256)"),
        (["--cluster", "not an address"], "expected 'local' or a scheduler address"),
    ],
)
def test_command_line_usage_errors(synthetic_dir, tmp_path, capsys, args, message):
    code = main(["search", "--data-dir", str(synthetic_dir), "--no-verify", "--out", str(tmp_path / "s"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_no_dask_gives_one_line(monkeypatch):
    from mnistlab.errors import MnistlabError
    from mnistlab.search.parallel import workers

    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # import fails as if absent
    with pytest.raises(MnistlabError) as e, workers(cluster="tcp://127.0.0.1:8786"):
        pass
    assert str(e.value) == "--cluster needs Dask, an optional extra: pip install 'mnistlab[dask]'"
