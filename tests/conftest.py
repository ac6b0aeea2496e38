"""Shared fixtures: real MNIST when it can be found, small synthetic IDX sets otherwise, and a real
Dask cluster on the loopback address."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistlab.data import idx
from mnistlab.data.load import find

# Tests never reach the internet: a missing dataset must fail fast, not try mirrors.
os.environ.setdefault("MNISTLAB_MIRRORS", "http://127.0.0.1:9/")


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST dataset (skips when it cannot be found; CI has it via MNISTLAB_DATA)."""
    from mnistlab.data import load_dataset

    if find("mnist") is None:
        pytest.skip("real MNIST not found (set MNISTLAB_DATA to the folder holding mnist/)")
    return load_dataset("mnist", download=False)


@pytest.fixture(scope="session")
def dnn_run(mnist, tmp_path_factory):
    """The one trained run the tests share: the notebook DNN after one epoch on real MNIST (about 97%),
    as `mnistlab train` leaves its run folder. Read it; a test that writes into a run folder takes
    run_copy instead."""
    from mnistlab.training import train

    out = tmp_path_factory.mktemp("shared") / "dnn1"
    train(model="dnn", epochs=1, verbose=0, dataset=mnist, out=str(out))
    return out


@pytest.fixture
def run_copy(dnn_run, tmp_path):
    """A copy of dnn_run of this test's own, to write into."""
    return Path(shutil.copytree(dnn_run, tmp_path / "dnn1"))


def synthetic_arrays(n_train=256, n_test=64, seed=0):
    """Learnable fake digits: class k lights up row band k of a 28x28 image."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return x, y

    return make(n_train), make(n_test)


def write_dataset(folder, arrays):
    """((x_train, y_train), (x_test, y_test)) as the four gzipped IDX files of a dataset folder."""
    (xtr, ytr), (xte, yte) = arrays
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in (
        ("train-images-idx3-ubyte", xtr),
        ("train-labels-idx1-ubyte", ytr),
        ("t10k-images-idx3-ubyte", xte),
        ("t10k-labels-idx1-ubyte", yte),
    ):
        idx.write_idx(folder / (stem + ".gz"), arr)
    return folder


@pytest.fixture
def synthetic_dir(tmp_path):
    """A folder holding the four IDX files of a small learnable dataset (gzipped)."""
    return write_dataset(tmp_path / "synthetic", synthetic_arrays())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """(scheduler address, {worker pid: its process}): a scheduler and two single-thread workers,
    each one process (no nanny, so a killed worker stays dead), all on the loopback address."""
    distributed = pytest.importorskip("distributed")
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "cluster.log", "wb")
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            cwd=tmp_path,
            stdout=logs,
            stderr=logs,
        )
    ]
    procs += [
        subprocess.Popen(
            [
                dask,
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                f"w{i}",
            ],
            cwd=tmp_path,
            stdout=logs,
            stderr=logs,
        )
        for i in range(2)
    ]
    try:
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            pids = set(client.run(os.getpid).values())
        yield address, {proc.pid: proc for proc in procs[1:] if proc.pid in pids}
    finally:
        for proc in procs[::-1]:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logs.close()
