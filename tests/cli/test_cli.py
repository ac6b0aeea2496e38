import json
import os
import subprocess
import sys

import pytest

from mnistlab.cli import main


def mnistlab(*args, env=None):
    """Run the real command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "mnistlab train --model cnn" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_parser_imports_neither_keras_nor_jax():
    # `mnistlab --help` and usage errors stay quick; `mnistlab train` reads the data while Keras imports
    code = (
        "import sys; from mnistlab.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('keras', 'jax', 'matplotlib', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "vgg"], "invalid choice: 'vgg'"),
        (["train", "--epochs", "0"], "must be at least 1"),
        (["train", "--batch-size", "x"], "must be a whole number"),
        (["train", "--lr", "-0.1"], "must be positive"),
        (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["train", "--validation-split", "1"], "validation_split must be in (0, 1), got 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_wrong_options_are_usage_errors(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_optimizer_is_a_usage_error(capsys):
    assert main(["train", "--optimizer", "adamw2", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown optimizer 'adamw2'" in err


@pytest.mark.slow
def test_missing_dataset_one_line_exit_1(tmp_path, monkeypatch, capsys):
    from mnistlab.data import load

    monkeypatch.setattr(load, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MNISTLAB_MIRRORS", "http://127.0.0.1:9/")
    assert main(["show", "--dataset", "fashion-mnist"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "could not download" in err and "put train-images-idx3-ubyte.gz" in err


def test_unwritable_out_fails_before_training(tmp_path, capsys, mnist):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--epochs", "1", "--out", str(blocker / "run")]) == 1
    assert "cannot write to output folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"


@pytest.mark.slow
def test_train_evaluate_show_end_to_end(tmp_path, mnist):
    out = tmp_path / "run"
    r = mnistlab("train", "--epochs", "1", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.95
    r = mnistlab("evaluate", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    r = mnistlab("show", "--index", "7", "--split", "test", "--out", str(tmp_path / "d.png"))
    assert r.returncode == 0 and "label 9" in r.stdout
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    r = mnistlab("evaluate", str(tmp_path / "d.png"))
    assert r.returncode == 1 and "not a Keras model file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_quick_exit_still_delivers_piped_output(tmp_path, mnist):
    """show, train, evaluate... end without the interpreter's finalization (QUICK_EXIT): what they
    printed into a pipe, block-buffered, must still arrive, and the exit status too."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    run = [sys.executable, "-m", "mnistlab", "show", "--index", "7", "--split", "test"]
    r = subprocess.run([*run, "--out", str(tmp_path / "d.png")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "label 9" in r.stdout, r.stderr
    r = subprocess.run(
        [*run, "--out", str(tmp_path / "missing" / "d.png")], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 1 and r.stderr.startswith("mnistlab show: error:")
