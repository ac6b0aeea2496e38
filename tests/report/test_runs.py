"""`mnistlab runs` lists real run folders with their figures, marks damaged ones without failing;
`mnistlab compare` draws their learning curves on one figure and one page; runs and search
results display themselves in Jupyter (IPython's HTML formatter)."""

import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from tests.report.test_report import Page

SLICE = 3000


@pytest.fixture(scope="module")
def three(mnist, tmp_path_factory):
    """Three real runs on a slice of MNIST: (folder holding them, {name: Run})."""
    from mnistlab.training import train

    root = tmp_path_factory.mktemp("runs")
    small = dataclasses.replace(mnist, x_train=mnist.x_train[:SLICE], y_train=mnist.y_train[:SLICE])
    runs = {
        "adam": train(model="dnn", epochs=2, verbose=0, dataset=small, out=str(root / "adam")),
        "sgd": train(model="dnn", epochs=1, optimizer="SGD", verbose=0, dataset=small, out=str(root / "sgd")),
        "cnn": train(model="cnn", epochs=1, verbose=0, dataset=small, out=str(root / "nested" / "cnn")),
    }
    return root, runs


def listed(capsys, *args):
    assert main(["runs", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


@pytest.mark.slow
def test_runs_lists_every_run_with_its_figures(three, capsys):
    root, runs = three
    rows = {row["name"]: row for row in json.loads(listed(capsys, str(root), "--json"))}
    assert set(rows) == {"adam", "sgd", os.path.join("nested", "cnn")}
    for name, run in runs.items():
        row = rows[os.path.join("nested", "cnn") if name == "cnn" else name]
        metrics = json.loads((root / row["name"] / "metrics.json").read_text())
        assert row["status"] == "finished" and row["problem"] is None
        assert (row["model"], row["dataset"], row["optimizer"]) == (run.config.model, "mnist", run.config.optimizer)
        assert row["epochs"] == run.config.epochs == metrics["epochs"]
        assert row["test_accuracy"] == metrics["test_accuracy"] == run.metrics["test_accuracy"]
        assert row["train_seconds"] == metrics["train_seconds"]
        assert row["date"][:4].isdigit() and "T" in row["date"]
    text = listed(capsys, str(root))
    assert "test accuracy" in text and "training s" in text and "\x1b[" not in text
    for name, run in runs.items():
        [line] = [line for line in text.splitlines() if line.split()[2:3] == [name if name != "cnn" else "nested/cnn"]]
        assert f"{run.metrics['test_accuracy']:.4f}" in line and run.config.optimizer in line


@pytest.mark.parametrize(
    "key, field",
    [
        ("accuracy", "test_accuracy"),
        ("name", "name"),
        ("epochs", "epochs"),
        ("time", "train_seconds"),
        ("date", "date"),
    ],
)
def test_runs_sort(three, capsys, key, field):
    root, _ = three
    up = [row[field] for row in json.loads(listed(capsys, str(root), "--json", "--sort", key))]
    down = [row[field] for row in json.loads(listed(capsys, str(root), "--json", "--sort", key, "--reverse"))]
    assert up == sorted(up) and down == sorted(up, reverse=True) and len(up) == 3


def test_damaged_runs_are_listed_and_marked(three, tmp_path, capsys):
    root, _ = three
    folder = tmp_path / "runs"
    shutil.copytree(root, folder)
    for name in ("bad-config", "bad-metrics", "no-model", "text-accuracy", "unfinished", "no-config"):
        shutil.copytree(root / "adam", folder / name)
    (folder / "bad-config" / "config.json").write_text('{"model": "dnn", ')
    (folder / "bad-metrics" / "metrics.json").write_text("[1, 2]")
    (folder / "no-model" / "model.keras").unlink()
    (folder / "text-accuracy" / "metrics.json").write_text('{"test_accuracy": "high"}')
    for file in ("metrics.json", "model.keras", "history.json"):
        (folder / "unfinished" / file).unlink()
    (folder / "no-config" / "config.json").unlink()
    rows = {row["name"]: row for row in json.loads(listed(capsys, str(folder), "--json"))}
    assert {n for n, r in rows.items() if r["status"] == "finished"} == {"adam", "sgd", os.path.join("nested", "cnn")}
    problems = {n: r["problem"] for n, r in rows.items() if r["status"] == "damaged"}
    assert problems.keys() == {"bad-config", "bad-metrics", "no-model", "text-accuracy", "no-config"}
    assert problems["bad-config"].startswith("config.json: cannot read it as JSON")
    assert problems["bad-metrics"] == "metrics.json: not a JSON object"
    assert problems["no-model"] == "model.keras missing"
    assert problems["text-accuracy"] == "metrics.json: test_accuracy is 'high', not a number"
    assert problems["no-config"] == "config.json missing"
    assert rows["unfinished"]["status"] == "unfinished" and "--resume" in rows["unfinished"]["problem"]
    lines = listed(capsys, str(folder), "--sort", "accuracy").splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, one line each
    for name, problem in problems.items():
        [line] = [line for line in lines if f" {name} " in line]
        assert line.endswith(f"damaged: {problem}")
    # by accuracy, lowest first; the folders without one (unreadable, unfinished) last, by name
    scored = sorted((r for r in rows.values() if r["test_accuracy"] is not None), key=lambda r: r["test_accuracy"])
    unscored = sorted(n for n, r in rows.items() if r["test_accuracy"] is None)
    order = [next(n for n in rows if f" {n} " in line) for line in lines[2:]]
    assert order == [r["name"] for r in scored] + unscored and len(unscored) == 5


def test_runs_of_nothing(tmp_path, capsys):
    assert listed(capsys, str(tmp_path)).strip() == f"no run folders under {tmp_path}"
    assert json.loads(listed(capsys, str(tmp_path), "--json")) == []
    assert main(["runs", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err == f"mnistlab runs: error: {tmp_path / 'missing'}: no such folder\n"


def colour_share(pixels, rgb):
    return float((np.abs(pixels - np.array(rgb)).sum(axis=2) < 60).mean())


@pytest.mark.slow
def test_compare_draws_every_run_on_one_figure_and_page(three, tmp_path, capsys):
    root, _ = three
    out = tmp_path / "all.png"
    assert (
        main(
            [
                "compare",
                str(root / "adam"),
                str(root / "sgd"),
                str(root / "nested" / "cnn"),
                "--out",
                str(out),
                "--report",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [f"figure: {out}", f"report: {tmp_path / 'all.html'}"]
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape == (440, 1200, 3)
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # matplotlib's C0, C1, C2: one per run
        assert colour_share(pixels, rgb) > 0.0005, rgb
    page = (tmp_path / "all.html").read_text()
    parsed = Page(page)
    assert set(parsed.sections) == {"curves", "runs", "settings"}
    assert len(parsed.images) == 1 and parsed.images[0].startswith("data:image/png;base64,")
    assert [row[1] for row in parsed.rows["runs"][1:]] == ["adam", "sgd", "cnn"]
    differ = {row[0]: row[1:] for row in parsed.rows["settings"][1:]}
    assert differ["optimizer"] == ["Adam", "SGD", "Adam"] and differ["model"] == ["dnn", "dnn", "cnn"]
    assert differ["epochs"] == ["2", "1", "1"] and "batch_size" not in differ


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "config.json").write_text("{"), "config.json: cannot read it as JSON"),
        (lambda f: (f / "config.json").unlink(), "not a run folder (no config.json)"),
        (lambda f: (f / "history.json").write_text("[]"), "no per-epoch history to draw"),
    ],
)
def test_compare_refuses_a_damaged_run_in_one_line(three, tmp_path, capsys, damage, message):
    root, _ = three
    shutil.copytree(root / "adam", tmp_path / "bad")
    damage(tmp_path / "bad")
    assert main(["compare", str(root / "sgd"), str(tmp_path / "bad"), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnistlab compare: error: ") and message in err, err
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- Jupyter views


@pytest.fixture
def html_formatter():
    """IPython's own HTML formatter, with mnistlab's views registered as `import mnistlab` does in IPython."""
    formatters = pytest.importorskip("IPython.core.formatters")
    from mnistlab.report.notebook import register

    display = formatters.DisplayFormatter()
    assert register(type("Shell", (), {"display_formatter": display})())
    return display.formatters["text/html"]


def images_in(html):
    return [Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1]))) for src in Page(html).images]


def test_a_run_shows_its_figures_and_curves(three, html_formatter):
    _, runs = three
    run = runs["adam"]
    html = html_formatter(run)
    rows = {row[0]: row[1] for row in Page(f"<section id='x'>{html}</section>").rows["x"][1:]}
    assert rows["test accuracy"] == f"{run.metrics['test_accuracy']:.4f}" and rows["run folder"] == run.out
    sizes = [im.size for im in images_in(html)]
    assert sizes[:2] == [(600, 400), (600, 400)]  # accuracy.png, loss.png
    assert len(sizes) == 6  # then why, trust, the filters and the hidden layer's map (report.insight)
    unsaved = dataclasses.replace(run, out=None)  # no folder: the curves drawn from the history
    assert len(images_in(html_formatter(unsaved))) == 6 and "not saved" in html_formatter(unsaved)


@pytest.mark.slow
def test_a_search_result_shows_its_table(mnist, html_formatter):
    from mnistlab.search import search

    x, y = mnist.x_train[:1200], mnist.y_train[:1200]
    result = search(x, y, {"optimizer": ["SGD", "Adam"]}, cv=2, params={"epochs": 1}, refit=False)
    html = html_formatter(result)
    table = Page(f"<section id='x'>{html}</section>").rows["x"]
    assert table[0][:2] == ["rank", "optimizer"]
    best_first = sorted(result.rows, key=lambda r: r["rank_test_score"])
    assert [row[1] for row in table[1:]] == [r["params"]["optimizer"] for r in best_first]
    assert [row[2] for row in table[1:]] == [f"{r['mean_test_score']:.4f}" for r in best_first]
    assert len(images_in(html)) == 1  # the score chart


def test_views_register_only_inside_ipython():
    from mnistlab.report.notebook import register

    assert register() is False  # no IPython shell is running here


def test_the_notebook_views_name_the_classes_where_they_are_defined():
    import importlib

    from mnistlab.report.notebook import VIEWS

    for module, name in VIEWS:  # IPython's formatter matches a type by its defining module's name
        assert getattr(importlib.import_module(module), name).__module__ == module
