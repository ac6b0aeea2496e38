"""Shared fixtures: real MNIST when it can be found, small synthetic IDX sets otherwise."""
import os

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


def synthetic_arrays(n_train=256, n_test=64, seed=0):
    """Learnable fake digits: class k lights up row band k of a 28x28 image."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        return x, y

    return make(n_train), make(n_test)


@pytest.fixture
def synthetic_dir(tmp_path):
    """A folder holding the four IDX files of a small learnable dataset (gzipped)."""
    (xtr, ytr), (xte, yte) = synthetic_arrays()
    folder = tmp_path / "synthetic"
    folder.mkdir()
    for stem, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        idx.write_idx(folder / (stem + ".gz"), arr)
    return folder
