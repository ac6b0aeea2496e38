"""Nothing lost on a crash: a training run killed with SIGKILL during epoch 2 and
resumed with --resume ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistlab import load_model

pytestmark = pytest.mark.slow
ARGS = ["train", "--epochs", "2", "--seed", "5", "-q"]


def start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_epochs(out):
    try:
        with open(out / "checkpoint" / "state.json") as f:
            return json.load(f)["epoch"]
    except (FileNotFoundError, ValueError):
        return 0


def test_kill_during_epoch_2_then_resume_equals_uninterrupted(tmp_path, mnist):
    killed = tmp_path / "killed"
    proc = start(killed)
    deadline = time.monotonic() + 300
    while finished_epochs(killed) < 1:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert finished_epochs(killed) == 1
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "--resume", str(killed), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch" in resumed.stdout

    whole = tmp_path / "whole"
    proc = start(whole)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()

    a = json.loads((killed / "history.json").read_text())
    b = json.loads((whole / "history.json").read_text())
    assert a.keys() == b.keys() and len(a["loss"]) == 2
    for key in b:  # CPU, same machine: equal to float32 rounding (docs/determinism.md)
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    ma = json.loads((killed / "metrics.json").read_text())
    mb = json.loads((whole / "metrics.json").read_text())
    assert ma["test_accuracy"] == pytest.approx(mb["test_accuracy"], abs=1e-4)
    for wa, wb in zip(load_model(killed).get_weights(), load_model(whole).get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-6)
    assert not (killed / "checkpoint").exists()


def test_resume_of_a_finished_run_changes_nothing(tmp_path, mnist):
    from mnistlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "-q"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["train", "--resume", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
