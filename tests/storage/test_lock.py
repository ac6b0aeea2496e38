"""Two writers, one folder: a run or search folder is locked while a process writes it, a second
process gets one clear line naming the folder and the holder and writes nothing there, a lock left
by a killed process is taken over. And a full disk's error names the folder being written."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistlab.errors import MnistlabError
from mnistlab.storage import RunFolder, SearchFolder, folder

# A second process that holds folder argv[1] until its stdin closes.
HOLD = (
    "import sys; from mnistlab.storage import RunFolder; f = RunFolder(sys.argv[1]).prepare(); "
    "print('held', flush=True); sys.stdin.read(); f.close()"
)


class Holder:
    """Another process holding a folder's lock, for as long as the with block runs."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def listing(path):
    return {name: (path / name).read_bytes() if (path / name).is_file() else None for name in os.listdir(path)}


# ----------------------------------------------------------------------------- in one process


def test_the_lock_names_its_holder_and_goes_with_the_last_hold(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out) as run:
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert abs(holder["since"] - time.time()) < 60
        with RunFolder(out).start({"epochs": 1}) as again:  # the same process again (train() in the CLI's hold)
            assert again.held and (out / "config.json").exists()
        assert (out / ".lock").exists()  # still held by the outer one
        run.close()
        run.close()  # once released, closing again is nothing
    assert sorted(os.listdir(out)) == ["config.json"]


def test_every_way_out_releases_the_lock(tmp_path):
    out = tmp_path / "run"
    for stop in (KeyboardInterrupt(), MnistlabError("boom")):
        with pytest.raises(type(stop)), RunFolder(out):
            raise stop
        assert not (out / ".lock").exists() and folder._held == {}
    with Holder(out):  # and another process can take it at once
        pass


def test_a_failed_start_releases_the_lock(tmp_path, monkeypatch):
    from mnistlab.storage import run_folder

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder, "write_json", full)
    with pytest.raises(MnistlabError, match="cannot write run folder"):
        RunFolder(tmp_path / "run").start({"epochs": 1})
    assert os.listdir(tmp_path / "run") == [] and folder._held == {}


# ----------------------------------------------------------------------------- two processes


@pytest.mark.parametrize("kind", [RunFolder, SearchFolder])
def test_a_second_process_is_refused_and_writes_nothing(tmp_path, kind):
    out = tmp_path / "out"
    with Holder(out) as holder:
        (out / "config.json").write_text("the first writer's")
        before = listing(out)
        with pytest.raises(MnistlabError) as caught:
            kind(out).prepare()
        message = str(caught.value)
        assert message.startswith(
            f"{out} is being written by process {holder.pid} on host {socket.gethostname()} since "
        )
        assert message.endswith("; wait for it or choose another --out") and "\n" not in message
        with pytest.raises(MnistlabError, match="is being written by"):
            RunFolder(out).start({"epochs": 3})
        assert listing(out) == before
    assert not (out / ".lock").exists()  # the holder ended normally: its lock file went with it


def test_a_search_into_a_held_folder_is_refused_before_any_work(tmp_path):
    from mnistlab.search.run import plan_search, run_search
    from tests.conftest import synthetic_arrays

    (x, y), _ = synthetic_arrays(n_train=40)
    plan = plan_search(x, y, {"optimizer": ["SGD"]}, cv=2, params={"epochs": 1})
    out = tmp_path / "search"
    with Holder(out):
        with pytest.raises(MnistlabError, match="is being written by"):
            run_search(plan, x, y, out=str(out), refit=False)
        assert os.listdir(out) == [".lock"]


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = Holder(out)
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    stale = json.loads((out / ".lock").read_text())
    assert stale["pid"] == holder.pid  # left behind, but its flock died with the process
    with RunFolder(out):
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    assert not (out / ".lock").exists()


def test_a_lock_file_that_says_nothing_still_names_a_holder(tmp_path):
    out = tmp_path / "run"
    with Holder(out):
        (out / ".lock").write_text("")  # as if read between the holder's truncate and write
        with pytest.raises(MnistlabError, match="is being written by another process;"):
            RunFolder(out).prepare()


@pytest.mark.slow
def test_two_mnistlab_train_into_one_folder(tmp_path, mnist):
    """The second `mnistlab train --out` started while the first runs: it stops at once, exit 1,
    naming the folder and the first's pid; the first finishes with its results whole."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mnistlab", "train", "--batch-size", "256", "-q", "--out", str(out)]
    first = subprocess.Popen(command + ["--epochs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:  # until the first holds the folder
        try:
            if json.loads((out / ".lock").read_text())["pid"] == first.pid:
                break
        except (OSError, ValueError, KeyError):
            pass
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = subprocess.run(
        command + ["--epochs", "1", "--seed", "9"], capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 1 and second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"{out} is being written by process {first.pid} on host" in lines[0]

    assert first.wait(timeout=300) == 0, first.stderr.read()
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert (config["epochs"], config["seed"], config["batch_size"]) == (2, 0, 256)
    assert metrics["epochs"] == 2 and metrics["test_accuracy"] > 0.9
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 2
    from mnistlab.storage import load_model

    assert load_model(out).count_params() > 0
    assert not (out / ".lock").exists() and not (out / "checkpoint").exists()


# ----------------------------------------------------------------------------- a full disk


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_folder_being_written(tmp_path, monkeypatch):
    import keras

    from mnistlab.storage import files

    run, search = RunFolder(tmp_path / "a"), SearchFolder(tmp_path / "b")
    os.makedirs(run.path)
    os.makedirs(search.path)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    monkeypatch.setattr(type(model), "save", no_space)  # model saves
    writes = [
        (run, lambda: run.write_results({}, model, {"loss": [1.0]}, {})),
        (search, lambda: search.save_best_model(model)),
        (run, lambda: run.save_checkpoint([np.zeros(3)], 1, {})),  # np.savez, below
        (run, lambda: run.write_history({"loss": [1.0]})),  # the atomic writers' open, below
        (search, lambda: search.write_settings({})),
        (search, lambda: search.save_record("k", {})),
        (search, lambda: search.write_results([], "")),
    ]
    for i, (where, write) in enumerate(writes):
        if i == 2:
            monkeypatch.setattr(np, "savez", no_space)
        if i == 3:
            monkeypatch.setattr(files, "open", no_space, raising=False)
        with pytest.raises(MnistlabError) as caught:
            write()
        assert str(caught.value) == f"cannot write {where.KIND} {where.path}: No space left on device"
    assert os.listdir(run.path) == ["checkpoint"] and os.listdir(search.path) == ["fits"]  # nothing half-written
    assert os.listdir(run.checkpoint_dir) == os.listdir(search.records_dir) == []
