"""The search end to end: the search folder, resuming (also after kill -9),
records that a different search must not reuse, local worker processes and a
real two-worker Dask cluster giving the same table.

One small search (2 optimizers x 2 folds on 256 learnable synthetic images,
batch 64: each fit compiles once) is run in this process and is the reference
the other runs must reproduce exactly.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistlab import evaluate, load_model
from mnistlab.cli import main
from mnistlab.search.run import plan_search, search, unfinished_search
from mnistlab.search.store import RecordStore
from tests.conftest import synthetic_arrays, write_dataset

GRID = {"optimizer": ["SGD", "Adam"]}
CV = 2


@pytest.fixture(scope="module")
def arrays():
    return synthetic_arrays(n_train=256, n_test=64, seed=2)


@pytest.fixture(scope="module")
def data_dir(arrays, tmp_path_factory):
    """The same arrays as IDX files, for the command line (--no-verify: they are not MNIST's)."""
    return write_dataset(tmp_path_factory.mktemp("synthetic"), arrays)


@pytest.fixture(scope="module")
def reference(arrays, tmp_path_factory):
    (x, y), test = arrays
    out = str(tmp_path_factory.mktemp("searches") / "reference")
    return search(x, y, GRID, cv=CV, out=out, test_data=test)


def scores(rows):
    """What must match between runs: parameters, per-fold scores, and the derived columns."""
    keys = ("params", "mean_test_score", "std_test_score", "rank_test_score", "split0_test_score", "split1_test_score")
    return [{k: row[k] for k in keys} for row in rows]


def cli(data_dir, *args):
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "search",
        "--data-dir",
        str(data_dir),
        "--no-verify",
        "--grid",
        "optimizer=SGD,Adam",
        "--cv",
        str(CV),
        "--no-refit",
        *args,
    ]


@pytest.mark.slow
def test_search_folder_holds_everything(reference):
    out, rows = reference.out, reference.rows
    assert sorted(os.listdir(out)) == [
        "best.json",
        "best_model.keras",
        "fits",
        "results.csv",
        "results.json",
        "scores.png",
        "search.json",
    ]
    assert RecordStore(out).count() == 4 and (reference.reused, reference.computed) == (0, 4)
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == rows
    for row in rows:
        splits = [row["split0_test_score"], row["split1_test_score"]]
        assert row["mean_test_score"] == pytest.approx(np.mean(splits))
        assert row["std_test_score"] == pytest.approx(np.std(splits))
        assert row["mean_fit_time"] > 0
    assert [r["params"] for r in rows] == [{"optimizer": "SGD"}, {"optimizer": "Adam"}]
    means = [r["mean_test_score"] for r in rows]
    assert means[1] > means[0]  # Adam learns more than SGD in two steps
    assert [r["rank_test_score"] for r in rows] == [2, 1]
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [t["param_optimizer"] for t in table] == ["SGD", "Adam"]
    assert [float(t["mean_test_score"]) for t in table] == means
    with open(os.path.join(out, "best.json")) as f:
        best = json.load(f)
    assert best["best_params"] == {"optimizer": "Adam"} and best["best_score"] == means[1]
    assert best["params"]["optimizer_defaults"] == "notebook" and best["params"]["epochs"] == 1
    # the saved best model is the refit one: same test accuracy as reported
    (_, _), (xt, yt) = synthetic_arrays(n_train=256, n_test=64, seed=2)
    assert evaluate(load_model(os.path.join(out, "best_model.keras")), xt, yt) == pytest.approx(reference.test_metrics)
    with open(os.path.join(out, "scores.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_every_fit(reference, arrays):
    (x, y), _ = arrays
    records = os.path.join(reference.out, "fits")
    stamps = {name: os.stat(os.path.join(records, name)).st_mtime_ns for name in os.listdir(records)}
    again = search(x, y, GRID, cv=CV, out=reference.out, refit=False)
    assert (again.reused, again.computed) == (4, 0)
    assert again.rows == reference.rows  # fit times too: they come from the records
    assert {n: os.stat(os.path.join(records, n)).st_mtime_ns for n in os.listdir(records)} == stamps


def test_other_data_or_a_damaged_record_is_not_trusted(reference, arrays, tmp_path):
    (x, y), _ = arrays
    out = str(tmp_path / "copy")
    shutil.copytree(reference.out, out)
    damaged = sorted(os.listdir(os.path.join(out, "fits")))[0]
    with open(os.path.join(out, "fits", damaged), "w") as f:
        f.write('{"spec": {"fold": 0}, "resu')
    again = search(x, y, GRID, cv=CV, out=out, refit=False)
    assert (again.reused, again.computed) == (3, 1)
    assert scores(again.rows) == scores(reference.rows)

    other = x.copy()
    other[0, 0, 0] ^= 1  # one pixel of one image
    changed = search(other, y, {"optimizer": ["SGD"]}, cv=CV, out=out, refit=False)
    assert (changed.reused, changed.computed) == (0, 2)


def test_unfinished_search_is_found_again(reference, arrays, tmp_path):
    (x, y), _ = arrays
    root = tmp_path / "searches"
    shutil.copytree(reference.out, root / "20250101-000000")
    plan = plan_search(x, y, GRID, cv=CV)
    assert unfinished_search(str(root), plan) is None  # finished: a new run gets a new folder
    os.unlink(root / "20250101-000000" / "results.json")
    assert unfinished_search(str(root), plan) == str(root / "20250101-000000")
    assert unfinished_search(str(root), plan_search(x, y, GRID, cv=4)) is None


@pytest.mark.parametrize("connected", [True, False])
def test_fits_a_killed_dask_worker_cancelled_run_again(reference, arrays, tmp_path, monkeypatch, connected):
    """A killed worker can take the scattered data (or a finished fit's result) with it, and
    Dask cancels the fits that needed them: while the client still reaches its scheduler, the fits
    not yet done run again, each reported and recorded once; without it, the error is raised."""
    import concurrent.futures
    import contextlib

    from mnistlab.search import parallel, run

    @contextlib.contextmanager
    def cluster_workers(jobs=None, cluster=None):
        yield parallel.on_joblib(1, None), lambda: connected

    fits = run.run_fits
    calls = []

    def losing_one(plan, tasks, *args):  # the first call's second fit is lost with its worker
        calls.append(list(tasks))
        for n, finished in enumerate(fits(plan, tasks, *args)):
            if len(calls) == 1 and n == 1:
                raise concurrent.futures.CancelledError()
            yield finished

    monkeypatch.setattr(parallel, "workers", cluster_workers)
    monkeypatch.setattr(run, "run_fits", losing_one)
    (x, y), _ = arrays
    lines = []
    if not connected:
        with pytest.raises(concurrent.futures.CancelledError):
            search(x, y, GRID, cv=CV, out=str(tmp_path / "s"), refit=False, progress=lines.append)
        assert len(lines) == 1 and RecordStore(str(tmp_path / "s")).count() == 1
        return
    again = search(x, y, GRID, cv=CV, out=str(tmp_path / "s"), refit=False, progress=lines.append)
    assert [len(c) for c in calls] == [4, 3]  # the second call: the three fits not yet done
    assert [line.split("  ")[0] for line in lines] == [f"fit {n}/4" for n in range(1, 5)]
    assert RecordStore(str(tmp_path / "s")).count() == 4 and (again.reused, again.computed) == (0, 4)
    assert scores(again.rows) == scores(reference.rows)


def test_command_prints_the_notebook_lines(reference, data_dir, tmp_path, capsys):
    out = str(tmp_path / "s")
    shutil.copytree(reference.out, out)
    args = cli(data_dir, "--out", out, "--quiet")[3:]
    assert main(args) == 0
    printed = capsys.readouterr().out
    sgd, adam = reference.rows
    assert f"Best: {adam['mean_test_score']:f} using {{'optimizer': 'Adam'}}" in printed
    assert f"{sgd['mean_test_score']:f} ({sgd['std_test_score']:f}) with: {{'optimizer': 'SGD'}}" in printed
    assert "rank  optimizer" in printed and "(0 fits run, 4 reused)" in printed


@pytest.mark.slow
def test_local_worker_processes_give_the_same_table(reference, arrays, tmp_path):
    (x, y), _ = arrays
    parallel = search(x, y, {"optimizer": ["SGD"]}, cv=CV, out=str(tmp_path / "jobs"), jobs=2, refit=False)
    unranked = [{k: v for k, v in row.items() if k != "rank_test_score"} for row in scores(reference.rows)]
    assert scores(parallel.rows) == [unranked[0] | {"rank_test_score": 1}]
    workers = {RecordStore(str(tmp_path / "jobs")).load(parallel.plan.spec(0, f))["worker"] for f in range(CV)}
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # the fits ran in worker processes


@pytest.mark.slow
def test_a_cluster_of_one_single_thread_worker_runs_the_fits(reference, arrays, tmp_path):
    """Not in this process: joblib's dask backend did that with a one-thread cluster (CI saw it when
    a killed worker left one)."""
    pytest.importorskip("distributed")
    (x, y), _ = arrays
    out = str(tmp_path / "one")
    one = search(x, y, {"optimizer": ["SGD"]}, cv=CV, out=out, cluster="local", jobs=1, refit=False)
    unranked = [{k: v for k, v in row.items() if k != "rank_test_score"} for row in scores(reference.rows)]
    assert scores(one.rows) == [unranked[0] | {"rank_test_score": 1}]
    workers = {RecordStore(out).load(one.plan.spec(0, f))["worker"] for f in range(CV)}
    assert len(workers) == 1 and f"{socket.gethostname()}:{os.getpid()}" not in workers


def test_a_dask_run_cut_short_cancels_the_fits_it_did_not_give_back(tmp_path):
    """The search runs again what a run cut short (by a fit lost with its worker) did not give back:
    those fits must not go on running meanwhile, each twice on a busy cluster."""
    distributed = pytest.importorskip("distributed")
    from mnistlab.search.parallel import on_dask

    log = tmp_path / "started"  # a file: Dask sends the function to its worker as a copy

    def fit(task, x, y, threads):
        with open(log, "a") as f:
            f.write(f"{task}\n")
        time.sleep(0.3)
        return task

    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as local,
        distributed.Client(local) as client,
    ):
        finished = on_dask(client, None, lambda: client.status == "running")(
            fit, [{"task": n} for n in range(6)], np.arange(3), np.arange(3)
        )
        assert next(finished) in range(6)
        finished.close()
        time.sleep(2.5)  # what the five others would take, and more
    started = log.read_text().split()
    assert 1 <= len(started) <= 3  # the first, and those the worker had begun or held when it was cut short


@pytest.mark.slow
def test_killed_search_resumes_without_redoing_fits(reference, data_dir, tmp_path):
    out = str(tmp_path / "killed")
    store = RecordStore(out)
    proc = subprocess.Popen(cli(data_dir, "--out", out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while store.count() < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = store.count()
    assert proc.returncode == -signal.SIGKILL and 1 <= finished < 4, proc.stderr.read().decode()[-2000:]
    stamps = {n: os.stat(os.path.join(store.folder, n)).st_mtime_ns for n in os.listdir(store.folder)}

    rerun = subprocess.run(cli(data_dir, "--out", out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"reusing {finished} finished fits" in rerun.stdout
    assert f"({4 - finished} fits run, {finished} reused)" in rerun.stdout
    assert {n: os.stat(os.path.join(store.folder, n)).st_mtime_ns for n in stamps} == stamps
    with open(os.path.join(out, "results.json")) as f:
        assert scores(json.load(f)) == scores(reference.rows)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_table(reference, data_dir, cluster, tmp_path, capsys):
    address, workers = cluster
    out = str(tmp_path / "dask")
    assert main(cli(data_dir, "--cluster", address, "--out", out, "--quiet")[3:]) == 0
    capsys.readouterr()
    with open(os.path.join(out, "results.json")) as f:
        assert scores(json.load(f)) == scores(reference.rows)
    store, plan = RecordStore(out), reference.plan
    ran_on = {int(store.load(plan.spec(i, f))["worker"].rsplit(":", 1)[1]) for i in range(2) for f in range(CV)}
    assert ran_on and ran_on <= set(workers)
