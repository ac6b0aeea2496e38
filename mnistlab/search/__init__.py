"""Hyperparameter search: the notebook's GridSearchCV, resumable and distributable.

    estimator.py  MnistClassifier, a scikit-learn classifier over mnistlab's models
    grid.py       grids from --grid options or JSON/YAML files, checked up front
    store.py      one atomic record per finished (parameter set, fold) fit
    worker.py     the fit a worker runs (light at import: thread limits come first)
    parallel.py   where fits run: in-process, local processes, or a Dask cluster
    results.py    the table: results.csv, results.json, the notebook's printout
    run.py        search(): plan, run, summarise, refit the best
    tracking.py   a finished search's table to TensorBoard and MLflow

Names load on first use: a worker process must set its thread limits before
anything imports Keras.
"""
import importlib

API = {
    "MnistClassifier": "mnistlab.search.estimator",
    "search": "mnistlab.search.run",
    "plan_search": "mnistlab.search.run",
    "run_search": "mnistlab.search.run",
    "SearchResult": "mnistlab.search.run",
    "build_grid": "mnistlab.search.grid",
}
__all__ = sorted(API)


def __getattr__(name):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'mnistlab.search' has no attribute {name!r}")
