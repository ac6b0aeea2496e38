"""Logs people can read: `mnistlab train > train.log` (or piped, or in CI) prints one plain line per
epoch, without the progress bar's escape codes and carriage returns; a terminal keeps Keras' bar;
a search's lines are plain too."""

import os
import re
import subprocess
import sys

import pytest

EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  loss \d+\.\d{4}  accuracy \d\.\d{4}  val_loss \d+\.\d{4}  "
    r"val_accuracy \d\.\d{4}  \d+\.\ds"
)


def command(*args):
    return [sys.executable, "-m", "mnistlab", *args]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fast", "keras"])
def test_train_into_a_pipe_prints_one_plain_line_per_epoch(engine, synthetic_dir, tmp_path):
    data, run = synthetic_dir, tmp_path / "run"
    done = subprocess.run(
        command(
            "train", "--data-dir", str(data), "--no-verify", "--epochs", "2", "--engine", engine, "--out", str(run)
        ),
        capture_output=True,
        timeout=600,
    )  # bytes: text mode would turn "\r" into "\n"
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    assert "\r" not in out + err and "\x1b" not in out + err and "\b" not in out
    lines = out.splitlines()
    assert [EPOCH_LINE.fullmatch(line).groups() for line in lines[:2]] == [("1", "2"), ("2", "2")], out
    assert len(lines) == 3 and lines[2].startswith("test loss ")  # then the result line, nothing else


@pytest.mark.slow
def test_a_search_into_a_pipe_prints_plain_lines(synthetic_dir, tmp_path):
    data = synthetic_dir
    done = subprocess.run(
        command(
            "search",
            "--data-dir",
            str(data),
            "--no-verify",
            "--grid",
            "optimizer=SGD,Adam",
            "--cv",
            "2",
            "--epochs",
            "1",
            "--no-refit",
            "--out",
            str(tmp_path / "search"),
        ),
        capture_output=True,
        timeout=600,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    assert "\r" not in out + err and "\x1b" not in out + err
    assert sum(line.startswith("fit ") for line in out.splitlines()) == 4


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals here")
def test_a_terminal_keeps_keras_bar(synthetic_dir, tmp_path):
    data = synthetic_dir
    primary, secondary = os.openpty()
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            command("train", "--data-dir", str(data), "--no-verify", "--epochs", "2", "--out", str(tmp_path / "run")),
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=err,
        )
    os.close(secondary)
    chunks = []
    while True:  # read as it comes: a full pseudo-terminal would block the command
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(timeout=600) == 0, (tmp_path / "stderr").read_text()[-2000:]
    out = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in out and "Epoch 2/2" in out and not re.search(r"^epoch 1/2  ", out, re.MULTILINE)
