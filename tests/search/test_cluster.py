"""`mnistlab search --cluster` as users deploy it: a `dask scheduler` and two `dask worker`
processes on 127.0.0.1, the search run as a command, and faults in the middle of it.

- kill -9 one worker mid-search: the search still finishes with the full table, each fit is
  reported and recorded once, and the scores equal a run without the fault (same seeds);
- kill -9 the client mid-search, then rerun the same command: the fits that had finished are
  reused (their record files untouched), the rest run, and the table is the same again.

The no-fault reference is the same search run in this process (tests/search/test_run.py shows a
cluster run gives exactly that table).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mnistlab.search.run import search
from mnistlab.search.store import RecordStore
from tests.conftest import synthetic_arrays, write_dataset

pytestmark = pytest.mark.slow

GRID = {"optimizer": ["SGD", "Adam", "RMSprop"]}
CV = 2
FITS = len(GRID["optimizer"]) * CV
FIT = re.compile(r"^fit (\d+)/(\d+)  (.+)  fold (\d+)/\d+  accuracy", re.M)


@pytest.fixture(scope="module")
def arrays():
    return synthetic_arrays(n_train=384, n_test=64, seed=3)


@pytest.fixture(scope="module")
def data_dir(arrays, tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cluster-data"), arrays)


@pytest.fixture(scope="module")
def reference(arrays):
    (x, y), _ = arrays
    return {
        row["params"]["optimizer"]: [row[f"split{f}_test_score"] for f in range(CV)]
        for row in search(x, y, GRID, cv=CV, refit=False).rows
    }


def command(data_dir, address, out):
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "search",
        "--data-dir",
        str(data_dir),
        "--no-verify",
        "--grid",
        "optimizer=" + ",".join(GRID["optimizer"]),
        "--cv",
        str(CV),
        "--epochs",
        "1",
        "--no-refit",
        "--cluster",
        address,
        "--out",
        str(out),
    ]


def start(data_dir, address, out, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(
        command(data_dir, address, out),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    ), tmp_path / f"{name}.log"


def wait_for_records(store, proc, at_least, timeout=300):
    deadline = time.monotonic() + timeout
    while store.count() < at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return store.count()


def table(out):
    with open(os.path.join(out, "results.json")) as f:
        return {row["params"]["optimizer"]: [row[f"split{f}_test_score"] for f in range(CV)] for row in json.load(f)}


def test_a_worker_killed_mid_search(reference, data_dir, cluster, tmp_path):
    address, workers = cluster
    out = tmp_path / "worker-killed"
    store = RecordStore(str(out))
    proc, log = start(data_dir, address, out, tmp_path, "search")
    finished = wait_for_records(store, proc, 1)
    assert proc.poll() is None and 1 <= finished < FITS, log.read_text()[-3000:]
    # Kill a worker that has reported no fit yet where there is one: its first fit is in flight.
    reported = {int(w.rsplit(":", 1)[1]) for w in workers_of(out)}
    victim = next((pid for pid in workers if pid not in reported), next(iter(workers)))
    os.kill(victim, signal.SIGKILL)
    workers[victim].wait()
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

    text = log.read_text()
    reports = FIT.findall(text)
    assert sorted(int(n) for n, *_ in reports) == list(range(1, FITS + 1))  # each fit reported once
    assert len({(label, fold) for _, _, label, fold in reports}) == FITS
    assert store.count() == FITS  # and recorded once
    assert table(out) == reference
    assert {int(w.rsplit(":", 1)[1]) for w in workers_of(out)} <= set(workers)


def workers_of(out):
    """The "host:pid" of the worker that ran each recorded fit."""
    return {json.loads(p.read_text())["result"]["worker"] for p in (out / "fits").glob("*.json")}


def test_the_client_killed_mid_search_then_rerun(reference, data_dir, cluster, tmp_path):
    address, _ = cluster
    out = tmp_path / "client-killed"
    store = RecordStore(str(out))
    proc, log = start(data_dir, address, out, tmp_path, "first")
    finished = wait_for_records(store, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = store.count()
    assert proc.returncode == -signal.SIGKILL and 1 <= finished < FITS, log.read_text()[-3000:]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "fits").glob("*.json")}

    rerun = subprocess.run(command(data_dir, address, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"reusing {finished} finished fits" in rerun.stdout
    assert f"({FITS - finished} fits run, {finished} reused)" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "fits").glob("*.json") if p.name in stamps} == stamps
    assert store.count() == FITS
    assert table(out) == reference


def test_the_scheduler_killed_mid_search(data_dir, cluster, tmp_path):
    """The command stops with one line saying what to do; the fits finished so far stay recorded."""
    address, _ = cluster
    out = tmp_path / "scheduler-killed"
    store = RecordStore(str(out))
    proc, log = start(data_dir, address, out, tmp_path, "search")
    wait_for_records(store, proc, 1)
    port = address.rsplit(":", 1)[1]
    subprocess.run(["pkill", "-9", "-f", f"scheduler --host 127.0.0.1 --port {port} "], check=True)
    finished = store.count()
    assert proc.wait(timeout=300) == 1
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert f"mnistlab search: error: lost the Dask scheduler at {address} mid-search" in text
    assert finished <= store.count() < FITS


def test_the_dask_loggers_that_print_a_lost_schedulers_tracebacks_stay_quiet_during_a_search():
    """Each logger below printed a traceback into a search's output when its scheduler was killed
    (the client's batched comm, its comm and core, tornado's callbacks); the command says it in one
    line instead. Their levels come back after the search."""
    import logging

    pytest.importorskip("distributed")
    from mnistlab.search import parallel

    parallel.import_distributed()  # sets distributed's own levels, as a search does first
    names = [
        "distributed.batched",
        "distributed.comm.tcp",
        "distributed.core",
        "distributed.client",
        "tornado.application",
    ]
    before = [logging.getLogger(name).getEffectiveLevel() for name in names]
    assert all(level <= logging.ERROR for level in before)
    with parallel.quiet_cluster_logs():
        assert [name for name in names if logging.getLogger(name).isEnabledFor(logging.ERROR)] == []
    assert [logging.getLogger(name).getEffectiveLevel() for name in names] == before
