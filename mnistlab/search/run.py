"""Running a search: every (parameter set, fold) fit, reusing the ones the
search folder already records, then the table, the best parameters and the
best model refit on all the training data.

    >>> from mnistlab.search import search
    >>> result = search(x, y, {"optimizer": ["SGD", "Adam"]}, cv=4, out="searches/demo")
    >>> result.best_params, result.best_score

Folds are StratifiedKFold without shuffling, as GridSearchCV(cv=4) gives a
classifier, so the table is comparable to the notebook's.
"""

import concurrent.futures
import contextlib
import glob
import os
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import ParameterGrid, StratifiedKFold

from mnistlab.errors import UsageError
from mnistlab.search import results as tables
from mnistlab.search.grid import NOTEBOOK_CV, NOTEBOOK_GRID, NOTEBOOK_PARAMS, check_grid, check_params
from mnistlab.search.store import RecordStore, canonical, fingerprint, fit_spec
from mnistlab.storage import SearchFolder
from mnistlab.text import metric_text


@dataclass
class Plan:
    """What a search will do, fixed before any fit runs."""

    grid: list  # checked ParameterGrid input
    params: dict  # every training parameter not varied by the grid
    cv: int
    candidates: list  # the grid's parameter sets, in grid order
    splits: list  # (train indices, test indices) per fold
    data: str  # fingerprint of (x, y)
    n_samples: int
    backend: str  # Keras backend and the versions of Keras and of the backend

    def full_params(self, i):
        """Parameter set i with every other training parameter filled in."""
        return self.params | self.candidates[i]

    def cv_settings(self):
        return {"splitter": "StratifiedKFold", "n_splits": self.cv, "shuffle": False}

    def spec(self, i, fold):
        return fit_spec(self.full_params(i), fold, self.cv_settings(), self.data, self.backend)

    def settings(self):
        """What search.json holds: enough to recognise the same search when it is run again."""
        return canonical(
            {
                "grid": self.grid,
                "params": self.params,
                "cv": self.cv_settings(),
                "data": self.data,
                "n_samples": self.n_samples,
                "backend": self.backend,
            }
        )


@dataclass
class SearchResult:
    rows: list  # one per parameter set, grid order (see results.summarise)
    best_index: int
    plan: Plan
    out: str | None
    reused: int  # fits found already recorded
    computed: int  # fits run this time
    wall_seconds: float
    best_model: object = None  # refit on all of x, y (a keras.Model), unless refit=False
    test_metrics: dict = field(default_factory=dict)

    @property
    def best_params(self):
        return self.rows[self.best_index]["params"]

    @property
    def best_score(self):
        return self.rows[self.best_index]["mean_test_score"]


def plan_search(x, y, grid=None, cv=NOTEBOOK_CV, params=None):
    """Check the inputs and fix the parameter sets and folds; bad input is a UsageError."""
    from mnistlab.search.estimator import MnistClassifier

    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise UsageError(f"{len(x)} images but {len(y)} labels")
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or not 2 <= cv <= len(y):
        raise UsageError(f"cv must be a whole number from 2 to the number of training images ({len(y)}), got {cv!r}")
    grid = check_grid(NOTEBOOK_GRID if grid is None else grid)
    defaults = MnistClassifier().get_params()
    defaults.pop("verbose")
    base = defaults | NOTEBOOK_PARAMS | check_params(params or {})
    candidates = list(ParameterGrid(grid))
    splits = list(StratifiedKFold(n_splits=int(cv)).split(np.zeros(len(y)), y))
    return Plan(
        grid=grid,
        params=base,
        cv=int(cv),
        candidates=candidates,
        splits=splits,
        data=fingerprint(x, y),
        n_samples=len(y),
        backend=backend_text(),
    )


def backend_text():
    """The backend and versions, as "jax 0.10.2, keras 3.15.1, mnistlab 0.1.0": others may score differently."""
    import importlib.metadata

    import keras

    from mnistlab import __version__

    name = keras.backend.backend()  # the backends' names are their packages' names
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{name} {version}, keras {keras.__version__}, mnistlab {__version__}"


def unfinished_search(root, plan):
    """The newest folder under `root` holding an unfinished search with the same settings, or None."""
    settings = plan.settings()
    for folder in sorted(glob.glob(os.path.join(root, "*")), key=os.path.getmtime, reverse=True):
        search = SearchFolder(folder)
        if not search.finished() and search.holds_settings(settings):
            return folder
    return None


def run_search(plan, x, y, out=None, jobs=None, cluster=None, refit=True, test_data=None, progress=None):
    """Run (or finish) the planned search; with `out`, record each fit there and write the results.

    `cluster` is "local" or a Dask scheduler address; `test_data` (images, labels) is used to
    report the refit best model's test accuracy; `progress` receives one line per event.
    The folder is locked against other writers for the whole search (storage.folder).
    """
    folder = SearchFolder(out) if out else None
    with folder if folder else contextlib.nullcontext():  # released however the search ends
        return search_in(folder, plan, x, y, out, jobs, cluster, refit, test_data, progress)


def search_in(folder, plan, x, y, out, jobs, cluster, refit, test_data, progress):
    """run_search's work, the search folder `folder` (None without `out`) prepared and locked."""
    from mnistlab.search.parallel import workers

    say = progress or (lambda line: None)
    start = time.perf_counter()
    x, y = np.asarray(x), np.asarray(y)
    store = RecordStore(folder) if folder else None
    if folder:
        folder.write_settings(plan.settings())
    tasks = [(i, fold) for i in range(len(plan.candidates)) for fold in range(plan.cv)]
    done = {}
    for task in tasks:
        found = store.load(plan.spec(*task)) if store else None
        if found is not None:
            done[task] = found
    reused = len(done)
    pending = [task for task in tasks if task not in done]
    to_run = len(pending)
    if reused and store:  # fits are only reused from a store
        say(f"reusing {reused} finished fits recorded in {store.folder}; {len(pending)} to run")
    if pending:
        with workers(jobs, cluster) as (run, connected):
            while pending:
                try:
                    for task, result in run_fits(plan, pending, x, y, run):
                        if store:
                            store.save(plan.spec(*task), result)
                        done[task] = result
                        pending.remove(task)
                        say(
                            f"fit {len(done)}/{len(tasks)}  {tables.label(plan.candidates[task[0]])}  "
                            f"fold {task[1] + 1}/{plan.cv}  accuracy {metric_text(result['test_score'])}  "
                            f"({result['fit_time']:.1f} s)"
                        )
                except concurrent.futures.CancelledError:
                    # Dask keeps one copy of the scattered data: a killed worker may take it (or a fit's
                    # unfetched result) with it, and Dask cancels the fits that needed it. A new run
                    # scatters the data again and runs the fits not yet done.
                    if not connected():
                        raise
    table = [[done[(i, f)] for f in range(plan.cv)] for i in range(len(plan.candidates))]
    rows = tables.summarise(
        plan.candidates, *([[r[k] for r in fits] for fits in table] for k in ("test_score", "fit_time", "score_time"))
    )
    result = SearchResult(rows, tables.best_index(rows), plan, out, reused, to_run, 0.0)
    if folder:
        tables.write_results(folder, rows)
        write_scores_plot(result)
    if refit:
        refit_best(result, x, y, test_data, say)
    result.wall_seconds = round(time.perf_counter() - start, 2)
    if out:
        write_best(result)
    return result


def run_fits(plan, tasks, x, y, run):
    """(task, result) of each fit in `tasks`, in the order they finish; run: parallel.workers'."""
    from mnistlab.search.worker import fit_fold

    calls = []  # a list of its own: the caller removes each task from `tasks` as it finishes
    for task in tasks:
        train, test = plan.splits[task[1]]
        calls.append({"task": task, "params": plan.full_params(task[0]), "train": train, "test": test})
    for task, result in run(fit_fold, calls, x, y):
        yield tuple(task), result


def refit_best(result, x, y, test_data, say):
    """The best parameter set trained on all of x, y: best_model.keras, and its test accuracy."""
    from mnistlab.search.refit import refit_params

    result.best_model, metrics = refit_params(
        result.plan.full_params(result.best_index), x, y, test_data, result.out, say
    )
    if metrics is not None:
        result.test_metrics = metrics


def write_scores_plot(result):
    from mnistlab.search.plots import scores_chart

    SearchFolder(result.out).save_scores(scores_chart(result.rows, result.plan.cv))


def write_best(result):
    best = result.rows[result.best_index]
    SearchFolder(result.out).write_best(
        canonical(
            {
                "best_params": result.best_params,
                "best_score": result.best_score,
                "best_std": best["std_test_score"],
                "params": result.plan.full_params(result.best_index),
                "cv": result.plan.cv,
                "test_metrics": result.test_metrics or None,
                "model": SearchFolder.BEST_MODEL if result.best_model is not None else None,
                "fits_reused": result.reused,
                "fits_computed": result.computed,
                "wall_seconds": result.wall_seconds,
            }
        )
    )


TUNE_ONLY = ("trials", "timeout", "prune", "validation", "storage", "enqueue", "seed")


def search(x, y, grid=None, *, cv=NOTEBOOK_CV, params=None, strategy="grid", **options):
    """Cross-validated grid search over mnistlab's models; defaults are the notebook's experiment.

    `grid` maps training parameters to candidate values (or is a list of such mappings);
    `params` fixes the others. Options are run_search's: out, jobs, cluster, refit,
    test_data, progress. Returns a SearchResult.

    strategy="random" or "tpe": a sampled study instead (search.tune), where `grid` may also
    hold ranges ("1e-4..1e-2:log") and trials=, timeout=, prune=, validation=, storage=,
    enqueue= apply; returns a TuneResult.
    """
    if strategy != "grid":  # tune: sampled studies
        from mnistlab.search.tune import tune

        tune_options = {k: options.pop(k) for k in ("prune", "validation") if k in options}
        return tune(x, y, grid, strategy=strategy, params=params, **tune_options, **options)
    given = sorted(set(options) & set(TUNE_ONLY))
    if given:
        raise UsageError(f"{', '.join(given)} apply to strategy='random' or 'tpe', not to a grid")
    return run_search(plan_search(x, y, grid, cv, params), x, y, **options)
