"""mnistlab: the 'DNNs with Keras on MNIST' notebook as a package.

The pipeline, in the order the folders hold it:
    data -> models (and inference) -> training -> search -> report   (plus cli, web)

    >>> import mnistlab
    >>> run = mnistlab.train(model="dnn", epochs=1, out="runs/first")
    >>> run.metrics["test_accuracy"]

Names load on first use, so `import mnistlab` (and `mnistlab --help`) stays quick.
"""

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import mnistlab.backend  # noqa: F401  (JAX unless KERAS_BACKEND says otherwise)

try:
    __version__ = version("mnistlab")  # pyproject.toml holds the one copy
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

API = {
    "load_dataset": "mnistlab.data",
    "build_model": "mnistlab.models",
    "TrainConfig": "mnistlab.training",
    "Run": "mnistlab.training",
    "train": "mnistlab.training",
    "evaluate": "mnistlab.inference",
    "load_model": "mnistlab.storage",
    "TestTimeAugmentation": "mnistlab.inference",
    "predict": "mnistlab.inference",
    "predict_proba": "mnistlab.inference",
    "explain": "mnistlab.explain",
    "export": "mnistlab.export",
    "load_image": "mnistlab.data.images",
    "to_mnist": "mnistlab.data.digits",
    "search": "mnistlab.search",
    "MnistClassifier": "mnistlab.search",
    "list_runs": "mnistlab.report.runs",
    "compare": "mnistlab.report.compare",
    "TensorBoardLog": "mnistlab.training.tracking",
    "MlflowLog": "mnistlab.training.tracking",
    "MnistlabError": "mnistlab.errors",
    "UsageError": "mnistlab.errors",
    "DataError": "mnistlab.errors",
}
# A literal list, so that type checkers read it (tests/test_layout.py: the same names as API's)
__all__ = [
    "DataError",
    "MlflowLog",
    "MnistClassifier",
    "MnistlabError",
    "Run",
    "TensorBoardLog",
    "TestTimeAugmentation",
    "TrainConfig",
    "UsageError",
    "build_model",
    "compare",
    "evaluate",
    "explain",
    "export",
    "list_runs",
    "load_dataset",
    "load_image",
    "load_model",
    "predict",
    "predict_proba",
    "search",
    "to_mnist",
    "train",
]

if TYPE_CHECKING:  # API's names as type checkers and editors see them; at run time __getattr__ loads them
    from mnistlab.data import load_dataset
    from mnistlab.data.digits import to_mnist
    from mnistlab.data.images import load_image
    from mnistlab.errors import DataError, MnistlabError, UsageError
    from mnistlab.explain import explain
    from mnistlab.export import export
    from mnistlab.inference import TestTimeAugmentation, evaluate, predict, predict_proba
    from mnistlab.models import build_model
    from mnistlab.report.compare import compare
    from mnistlab.report.runs import list_runs
    from mnistlab.search.estimator import MnistClassifier  # mnistlab.search loads its names lazily too
    from mnistlab.search.run import search
    from mnistlab.storage import load_model
    from mnistlab.training import Run, TrainConfig, train
    from mnistlab.training.tracking import MlflowLog, TensorBoardLog

if "IPython" in sys.modules:  # in IPython or Jupyter, runs and search results display themselves
    from mnistlab.report.notebook import register as _register_views

    _register_views()


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
