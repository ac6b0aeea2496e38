"""Hyperparameter search: the notebook's GridSearchCV, resumable and distributable.

    estimator.py  MnistClassifier, a scikit-learn classifier over mnistlab's models
    grid.py       grids from --grid options or JSON/YAML files, checked up front
    store.py      one atomic record per finished (parameter set, fold) fit
    worker.py     the fit a worker runs (light at import: thread limits come first)
    parallel.py   where fits run: in-process, local processes, or a Dask cluster
    results.py    the table: results.csv, results.json, the notebook's printout
    run.py        search(): plan, run, summarise, refit the best
    tracking.py   a finished search's table to TensorBoard and MLflow

  sampled studies (strategy="random" or "tpe", on Optuna):
    space.py      lists and ranges (LOW..HIGH[:log]) as Optuna distributions
    study.py      storage (journal file or RDB), sampler, pruner, dead-process recovery, the budget
    trial.py      one trial: trained, validated and pruned epoch by epoch (light at import, as worker.py)
    runners.py    where trials run: this process, local processes, a Dask cluster
    trials.py     the trials table: results.json, results.csv, the printout
    study_plots.py  history, learning curves, importances
    tune.py       tune(): plan, run or continue, summarise, refit the best
    refit.py      the best parameters trained on all the data (a grid's and a study's)

Names load on first use: a worker process must set its thread limits before
anything imports Keras.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING

API = {
    "MnistClassifier": "mnistlab.search.estimator",
    "search": "mnistlab.search.run",
    "plan_search": "mnistlab.search.run",
    "run_search": "mnistlab.search.run",
    "SearchResult": "mnistlab.search.run",
    "build_grid": "mnistlab.search.grid",
    "tune": "mnistlab.search.tune",  # sampled studies (strategy="random" or "tpe")
    "TuneResult": "mnistlab.search.tune",
    "Range": "mnistlab.search.space",
}
# sorted(API), written out: type checkers read __all__ only as a literal
__all__ = [
    "MnistClassifier",
    "Range",
    "SearchResult",
    "TuneResult",
    "build_grid",
    "plan_search",
    "run_search",
    "search",
    "tune",
]

if TYPE_CHECKING:  # API's names as type checkers see them; at run time __getattr__ loads each on first use
    from mnistlab.search.estimator import MnistClassifier
    from mnistlab.search.grid import build_grid
    from mnistlab.search.run import SearchResult, plan_search, run_search, search
    from mnistlab.search.space import Range
    from mnistlab.search.tune import TuneResult, tune


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'mnistlab.search' has no attribute {name!r}")


class _Callable(types.ModuleType):
    """Once this package is imported, `mnistlab.search` names it rather than the function (Python sets a
    package's submodules as its attributes): calling the package calls the function, so that
    `mnistlab.search(...)` works every time, not only the first."""

    def __call__(self, *args, **kwargs):
        return self.search(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
