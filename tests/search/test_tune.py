"""Sampled studies (`mnistlab search --strategy random|tpe`): ranges, pruning, the timeout, a study
killed with kill -9 and run again, and a study on a real Dask cluster that loses a worker.

The training tests use small slices of real MNIST (2,400 images: 2,000 to train on, the last 400
to validate with) and two or three epochs; a trial takes a fraction of a second once its program
is compiled; the kill and cluster tests train 50 epochs a trial (a few seconds) to have one to kill.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnistlab.errors import UsageError
from mnistlab.search.grid import build_grid
from mnistlab.search.space import Range, build_space, check_space, distributions

ROOT = Path(__file__).resolve().parents[2]
N = 2400


# -- ranges


def test_ranges_parse_into_optuna_distributions():
    space = build_space(
        [
            "optimizer=Adam,Nadam",
            "lr=1e-4..1e-2:log",
            "hidden=32..512:log",
            "dropout=0..0.6",
            "batch_size=32,64,128,256",
            "augment=0.0..0.2",
            "weight_decay=1e-5..1e-2:log",
            "label_smoothing=0..0.2",
            "schedule=constant,cosine",
            "filters=8x16,16x32",
        ]
    )
    assert space["lr"] == Range(1e-4, 1e-2, log=True)
    assert space["hidden"] == Range(32, 512, log=True, integer=True)  # integer ends: integers
    assert space["dropout"] == Range(0.0, 0.6)
    assert space["filters"] == [[8, 16], [16, 32]]
    dists = distributions(space)
    assert type(dists["hidden"]).__name__ == "IntDistribution" and dists["hidden"].log
    assert type(dists["lr"]).__name__ == "FloatDistribution" and dists["lr"].log
    assert dists["filters"].choices == ("8x16", "16x32")  # Optuna keeps text; trials get lists


def test_ranges_in_grid_files_and_the_api(tmp_path):
    (tmp_path / "space.yaml").write_text(
        "optimizer: [Adam, SGD]\nlr: 1e-4..1e-1:log\nhidden: {low: 32, high: 256, log: true}\n"
    )
    space = build_space(["dropout=0.1..0.5"], tmp_path / "space.yaml")
    assert space == {
        "optimizer": ["Adam", "SGD"],
        "lr": Range(1e-4, 1e-1, log=True),
        "hidden": Range(32, 256, log=True, integer=True),
        "dropout": Range(0.1, 0.5),
    }
    assert check_space({"lr": Range(1e-3, 1e-1, log=True)}) == {"lr": Range(1e-3, 1e-1, log=True)}


@pytest.mark.parametrize(
    "option, message",
    [
        ("lr=1e-2..1e-4", "is empty or inverted"),
        ("dropout=0.3..0.3", "is empty or inverted"),
        ("dropout=0..0.5:log", "must stay above 0"),
        ("dropout=0..1", "dropout must be in [0, 1)"),
        ("momentum=0.8..0.99", "unknown parameter 'momentum'"),
        ("optimizer=1..3", "unknown optimizer"),
        ("flip=0..1", "takes a list of values, not a range"),
        ("lr=..0.1", "malformed range"),
        ("hidden=32..64,128", "a range stands alone"),
    ],
)
def test_bad_ranges(option, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        build_space([option])


def test_a_range_under_the_grid_strategy_is_refused():
    with pytest.raises(UsageError, match="ranges need --strategy random or tpe"):
        build_grid(["lr=1e-4..1e-2:log"])


def test_the_api_refuses_study_options_for_a_grid():
    from mnistlab.search import search

    with pytest.raises(UsageError, match="trials apply to strategy='random' or 'tpe'"):
        search([[0]] * 8, [0] * 8, {"optimizer": ["SGD"]}, trials=3)


# -- studies that train


@pytest.fixture(scope="module")
def small(mnist):
    return mnist.x_train[:N], mnist.y_train[:N]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fast", "keras"])
def test_each_epoch_reaches_the_pruner_and_a_prune_stops_training_at_once(small, engine):
    """From the training loop itself, on the compiled fast path and in Keras' fit alike."""
    from mnistlab.data import one_hot
    from mnistlab.search.trial import epoch_watcher
    from mnistlab.training import loop
    from mnistlab.training.config import TrainConfig

    x, y = small[0].reshape(-1, 784), one_hot(small[1])
    config = TrainConfig(model="dnn", epochs=5, engine=engine, hidden=[64])
    seen = []
    watcher = epoch_watcher(lambda epoch, value: seen.append((epoch, value)) or epoch == 1)
    history = loop.fit(
        loop.make_model(config, 2000), x[:2000], y[:2000], (x[2000:], y[2000:]), config, verbose=0, callbacks=[watcher]
    )
    assert [epoch for epoch, _ in seen] == [0, 1] and watcher.pruned
    assert watcher.values == [value for _, value in seen] == history["val_accuracy"]
    assert len(history["loss"]) == 2  # not one epoch more


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned(small, tmp_path):
    from mnistlab.search import search

    x, y = small
    good = {"optimizer": "Adam", "lr": 1e-3}
    result = search(
        x,
        y,
        {"optimizer": ["Adam", "SGD"], "lr": "1e-5..1e-2:log"},
        strategy="tpe",
        trials=4,
        params={"epochs": 3, "hidden": [64]},
        out=tmp_path / "study",
        refit=False,
        enqueue=[good, good, good, {"optimizer": "SGD", "lr": 1e-5}],
    )
    states = [row["state"] for row in result.rows]
    assert states == ["complete", "complete", "complete", "pruned"], result.rows
    hopeless = result.rows[3]
    assert hopeless["params"] == {"optimizer": "SGD", "lr": 1e-5}
    assert hopeless["epochs"] == 2 < 3  # stopped at once, after epoch 2
    assert hopeless["value"] < min(row["value"] for row in result.rows[:3])
    assert all(len(row["val_accuracy"]) == 3 for row in result.rows[:3])
    written = json.loads((tmp_path / "study" / "results.json").read_text())
    assert [r["state"] for r in written] == states
    assert result.counts == {"complete": 3, "pruned": 1, "failed": 0}
    for picture in ("history.png", "curves.png"):
        assert (tmp_path / "study" / picture).read_bytes()[:4] == b"\x89PNG"

    # what a person looks at: the report page and the notebook view
    from mnistlab.report.html import render_report
    from mnistlab.report.notebook import study_html

    page = render_report(tmp_path / "study")
    for part in ("Optimization history", "Learning curves", "Trials, best first", ">pruned<", "tpe study: 4 trials"):
        assert part in page
    view = study_html(result)
    assert view.count("<img") >= 2 and ">pruned<" in view and "Best: trial" in view


@pytest.mark.slow
def test_the_timeout_ends_the_study(small, tmp_path):
    from mnistlab.search import search

    x, y = small
    start = time.time()
    result = search(
        x,
        y,
        {"lr": "1e-4..1e-2:log", "dropout": "0.0..0.5"},
        strategy="random",
        timeout=4,
        params={"epochs": 1, "hidden": [64]},
        out=tmp_path / "timed",
        refit=False,
    )
    assert result.ran >= 1 and len(result.rows) == result.ran
    # no trial starts after the timeout (the one running then finishes)
    started = [time.mktime(time.strptime(r["started"], "%Y-%m-%dT%H:%M:%S")) for r in result.rows]
    assert max(started) <= start + 4 + 1
    assert time.time() - start < 60


def command(data_dir, out, *extra):
    """A study of trials long enough to be killed in the middle of (50 epochs of ~50 ms: a few seconds)."""
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "search",
        "--strategy",
        "random",
        "--limit",
        str(N),
        "--epochs",
        "50",
        "--data-dir",
        str(data_dir),
        "--grid",
        "lr=1e-3..1e-2:log",
        "--prune",
        "none",
        "--no-refit",
        "--out",
        str(out),
        *extra,
    ]


def finished_rows(out):
    try:
        return json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return []


def load_study(out):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    name = json.loads((out / "search.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=storage)


def mnist_dir():
    from mnistlab.data.load import find

    return find("mnist")


@pytest.mark.slow
def test_a_study_killed_with_kill_9_continues_where_it_was(small, tmp_path):
    """Killed a moment after the first trial finished: the second is running then, and dies with it."""
    total, out = 3, tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            command(mnist_dir(), out, "--trials", str(total)), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        deadline = time.monotonic() + 240
        while not finished_rows(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = finished_rows(out)
    assert proc.returncode == -signal.SIGKILL and 1 <= len(before) < total, (tmp_path / "first.log").read_text()
    running = [t.number for t in load_study(out).trials if t.state.name == "RUNNING"]
    assert running == [len(before)]  # Optuna left it RUNNING

    rerun = subprocess.run(
        command(mnist_dir(), out, "--trials", str(total)),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    after = finished_rows(out)
    by_number = {r["number"]: r for r in after}
    for row in before:  # kept exactly as they were
        assert by_number[row["number"]] == row
    done = [r for r in after if r["state"] in ("complete", "pruned")]
    assert len(done) == total  # the total is reached
    for number in running:  # the trial that died: run again
        assert by_number[number]["state"] == "failed" and by_number[number]["retried_as"] is not None
        assert f"trial {number} was running in a process that is gone" in rerun.stdout
        copy = by_number[by_number[number]["retried_as"]]
        assert copy["retry_of"] == number and copy["params"] == by_number[number]["params"]
        assert copy["state"] == "complete"


@pytest.mark.slow
def test_a_study_on_a_dask_cluster_survives_a_killed_worker(monkeypatch, tmp_path, request):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import this checkout's mnistlab
    address, workers = request.getfixturevalue("cluster")
    total, out = 4, tmp_path / "cluster"
    with open(tmp_path / "search.log", "w") as log:
        proc = subprocess.Popen(
            command(mnist_dir(), out, "--trials", str(total), "--cluster", address),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + 300
        while not finished_rows(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
        # The other worker is still in its first trial: kill it there.
        reported = {int(r["worker"].rsplit(":", 1)[1]) for r in finished_rows(out)}
        victim = next(pid for pid in workers if pid not in reported)
        os.kill(victim, signal.SIGKILL)
        workers[victim].wait()
        assert proc.wait(timeout=300) == 0, (tmp_path / "search.log").read_text()[-3000:]
    rows = finished_rows(out)
    assert sorted(r["number"] for r in rows) == list(range(total))  # each trial once, none lost
    assert all(r["state"] == "complete" for r in rows)
    ran_on = [int(r["worker"].rsplit(":", 1)[1]) for r in rows]
    assert set(ran_on) <= set(workers)
    # The trial it was in ran again elsewhere. The victim may own one row: a trial it had finished
    # whose result was still on its way to the driver when the test chose it.
    assert ran_on.count(victim) <= 1


@pytest.fixture
def dask_pool(monkeypatch):
    """pool(wait, connected): a cluster runner's Pool on a one-worker in-process cluster, whose trials
    return (params, the sum of the scattered x: 45); also the client and each scattered copy."""
    distributed = pytest.importorskip("distributed")
    from mnistlab.search import runners

    monkeypatch.setattr(runners, "run_trial", lambda params, x, y, n_val, snapshot, threads: (params, int(x.sum())))
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as local,
        distributed.Client(local) as client,
    ):
        scattered = []

        def scatter():
            scattered.append(client.scatter([np.arange(10), np.zeros(10)], broadcast=True))
            return scattered[-1]

        def pool(wait=distributed.wait, connected=lambda: client.status == "running"):
            submit = lambda fn, *args: client.submit(fn, *args, pure=False)  # noqa: E731
            return runners.Pool(submit, wait, lambda: 1, scatter(), 0, 1, scatter, connected)

        yield pool, client, scattered


def test_trials_whose_scattered_data_were_lost_are_resubmitted(dask_pool):
    """Dask keeps one copy of scattered data; when the worker holding it dies, the trials that need
    it are cancelled (FuturesCancelledError). The cluster runner scatters again and resubmits them."""
    make, client, scattered = dask_pool
    pool = make()
    client.cancel(pool.data)  # as if the worker holding them had died
    pool.submit("trial 0", {"lr": 0.1})
    finished = []
    for _ in range(20):
        finished += pool.wait(timeout=5)
        if finished:
            break
    assert finished == [("trial 0", ({"lr": 0.1}, 45))] and len(scattered) == 2
    pool.submit("trial 1", {"lr": 0.2})  # the new copy serves the next trials
    assert pool.wait(timeout=30) == [("trial 1", ({"lr": 0.2}, 45))] and len(scattered) == 2


def test_a_trial_whose_result_was_lost_after_it_finished_is_resubmitted(dask_pool):
    """A trial that finished on a worker killed before the driver fetched its result: Dask cancels
    it after wait() has returned it as done, and result() raises FutureCancelledError."""
    import distributed

    make, client, _ = dask_pool
    cancelled = []

    def wait(futures, **kwargs):  # the first finished trial loses its result on its way back
        done = distributed.wait(futures, **kwargs)
        if not cancelled:
            cancelled.extend(done.done)
            client.cancel(cancelled)
        return done

    pool = make(wait)
    pool.submit("trial 0", {"lr": 0.1})
    assert pool.wait(timeout=30) == [] and len(cancelled) == 1  # resubmitted, not raised
    assert pool.wait(timeout=30) == [("trial 0", ({"lr": 0.1}, 45))]
    assert list(pool.futures) == []

    # Without a scheduler to resubmit to, the loss is raised for the command to report.
    cancelled.clear()
    pool = make(wait, connected=lambda: False)
    pool.submit("trial 1", {"lr": 0.2})
    with pytest.raises(concurrent.futures.CancelledError):
        pool.wait(timeout=30)
