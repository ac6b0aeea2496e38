"""Running a sampled study (--strategy random or tpe): Optuna samples each trial's parameters from
the space, the trial trains on the head of the training set and is scored (and pruned) on its
held-out tail, every finished trial goes into results.json at once; then the best trial's
parameters are refit on all training data and scored on the test set, as a grid search's are.

    >>> from mnistlab.search import search
    >>> result = search(x, y, {"optimizer": ["Adam", "Nadam"], "lr": "1e-4..1e-2:log"},
    ...                 strategy="tpe", trials=30, params={"epochs": 5}, out="searches/tpe")
    >>> result.best_params, result.best_score, result.test_metrics

The study lives in the search folder's journal (or --storage): running the same command again
continues it (finished trials kept, the trial a killed process was running retried) until the
total is reached.
"""

import contextlib
import glob
import os
import time
from dataclasses import dataclass, field

import numpy as np

from mnistlab.errors import UsageError
from mnistlab.search import study as studies
from mnistlab.search import trials as tables
from mnistlab.search.space import check_space, choice, space_settings, suggest
from mnistlab.storage import SearchFolder

POLL_S = 2.0  # how often a waiting command looks at trials running elsewhere
VALIDATION_IMAGES = 10_000


@dataclass
class TunePlan:
    """What a study is, fixed before any trial runs."""

    space: dict  # checked space: {name: Range or [values]}
    params: dict  # every training parameter the space does not vary
    strategy: str  # random or tpe
    prune: str  # median, hyperband or none
    n_val: int  # held-out images at the end of the training set
    data: str  # fingerprint of (x, y)
    n_samples: int

    def identity(self):
        """What decides the trials' scores: the same study continues only if all of it is the same."""
        from mnistlab.search.store import canonical

        return canonical(
            {
                "space": space_settings(self.space),
                "params": self.params,
                "data": self.data,
                "n_samples": self.n_samples,
                "validation": {"held_out_tail": self.n_val},
            }
        )

    def name(self):
        return studies.study_name(self.identity())

    def most_epochs(self):
        """The longest a trial trains (hyperband's largest budget): --epochs, or the top of its range."""
        from mnistlab.search.space import Range

        epochs = self.space.get("epochs", self.params.get("epochs"))
        return epochs.high if isinstance(epochs, Range) else max(epochs) if isinstance(epochs, list) else epochs

    def settings(self):
        return {"study": self.name(), "strategy": self.strategy, "prune": self.prune} | self.identity()


@dataclass
class TuneResult:
    rows: list  # one per finished trial (search.trials), trial order
    best: dict | None  # the best complete trial's row
    plan: TunePlan
    out: str | None
    counts: dict  # trials by state
    ran: int  # trials this call ran
    wall_seconds: float
    study_seconds: float  # of which running trials (the rest: loading, the pictures, the refit)
    importances: dict = field(default_factory=dict)
    best_model: object = None
    test_metrics: dict = field(default_factory=dict)
    study: object = None  # the optuna.Study

    @property
    def best_params(self):
        return self.best["params"] if self.best else None

    @property
    def best_score(self):
        return self.best["value"] if self.best else None


def validation_size(n, validation=None):
    """Held-out images: a count, a fraction of n, or by default 10,000 of MNIST's 60,000 (1/6 of n)."""
    whole = isinstance(validation, int) or (isinstance(validation, float) and validation.is_integer())
    if validation is None:
        count = min(VALIDATION_IMAGES, round(n / 6))
    elif isinstance(validation, bool) or not isinstance(validation, (int, float)) or validation <= 0:
        raise UsageError(f"validation must be a number of images or a fraction in (0, 1), got {validation!r}")
    elif validation < 1:
        count = round(n * validation)
    elif whole:
        count = int(validation)
    else:
        raise UsageError(f"validation must be a number of images or a fraction in (0, 1), got {validation!r}")
    if not 1 <= count < n:
        raise UsageError(
            f"validation: {count} held-out images leave none to train on or none to validate with ({n} training images)"
        )
    return count


def plan_study(x, y, space=None, strategy="tpe", params=None, validation=None, prune="median"):
    """Check the inputs and fix the space, the fixed parameters and the held-out part."""
    from mnistlab.search.estimator import MnistClassifier
    from mnistlab.search.grid import NOTEBOOK_PARAMS, check_params
    from mnistlab.search.space import DEFAULT_SPACE
    from mnistlab.search.store import fingerprint

    if strategy not in studies.STRATEGIES:
        raise UsageError(f"strategy must be grid, {' or '.join(studies.STRATEGIES)}, got {strategy!r}")
    if prune not in studies.PRUNERS:
        raise UsageError(f"prune must be one of {', '.join(studies.PRUNERS)}, got {prune!r}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise UsageError(f"{len(x)} images but {len(y)} labels")
    space = check_space(DEFAULT_SPACE if space is None else space)
    defaults = MnistClassifier().get_params()
    defaults.pop("verbose")
    fixed = {k: v for k, v in (defaults | NOTEBOOK_PARAMS | check_params(params or {})).items() if k not in space}
    return TunePlan(space, fixed, strategy, prune, validation_size(len(y), validation), fingerprint(x, y), len(y))


def unfinished_study(root, plan):
    """The newest folder under `root` holding this study, unfinished (no best.json yet), or None."""
    for folder in sorted(glob.glob(os.path.join(root, "*")), key=os.path.getmtime, reverse=True):
        search = SearchFolder(folder)
        if not os.path.exists(search.file(SearchFolder.BEST)) and search.holds_settings(plan.settings()):
            return folder
    return None


def run_study(
    plan,
    x,
    y,
    out=None,
    trials=None,
    timeout=None,
    storage=None,
    jobs=None,
    cluster=None,
    refit=True,
    test_data=None,
    progress=None,
    enqueue=None,
    seed=None,
):
    """Run (or continue) the planned study until `trials` are counted or `timeout` seconds pass.

    storage: an Optuna RDB URL (default: the journal in `out`, or memory without `out`);
    enqueue: parameter sets to try first in a new study; the rest as search.run's run_search.
    """
    if trials is None and timeout is None:
        raise UsageError("a random or tpe study needs --trials N, --timeout SECONDS or both")
    folder = SearchFolder(out) if out else None
    with folder if folder else contextlib.nullcontext():  # locked against other writers, released however it ends
        return study_in(
            folder, plan, x, y, out, trials, timeout, storage, jobs, cluster, refit, test_data, progress, enqueue, seed
        )


def study_in(
    folder, plan, x, y, out, trials, timeout, storage, jobs, cluster, refit, test_data, progress, enqueue, seed
):
    """run_study's work, its search folder (None without `out`) prepared and locked."""
    from mnistlab.search.runners import runner

    say = progress or (lambda line: None)
    start = time.perf_counter()
    x, y = np.asarray(x), np.asarray(y)
    studies.quiet_optuna()
    storage = studies.check_storage_url(storage)
    if folder:
        folder.write_settings(plan.settings())
    store = studies.open_storage(out, storage) if (out or storage) else None
    seed = plan.params.get("seed", 0) if seed is None else seed
    study = studies.open_study(plan.name(), store, None, studies.make_pruner(plan.prune, plan.most_epochs()))
    study.sampler = studies.make_sampler(plan.strategy, studies.sampler_seed(seed, study, storage is not None))
    recorded = tables.trial_rows(study.get_trials(deepcopy=False))
    if recorded:
        say(f"continuing the study: {len(recorded)} trials recorded in {out or storage}, kept as they are")
    if enqueue and not study.trials:
        for params in enqueue:
            study.enqueue_trial({k: choice(v) for k, v in params.items()})
    deadline = time.monotonic() + timeout if timeout else None
    mine, ran = {}, 0
    with runner(x, y, plan.n_val, jobs, cluster) as pool, studies.Heartbeat() as heart:
        try:
            while True:
                for number in studies.recover(study, mine):
                    say(f"trial {number} was running in a process that is gone: failed, queued again")
                while len(mine) < pool.slots() and may_start(study, trials, deadline):
                    trial = study.ask()
                    if trials is not None and studies.used(study, below=trial.number) >= trials:
                        studies.mark_surplus(study, trial)  # another process took the last one first
                        break
                    studies.claim(trial)
                    heart.add(trial)
                    mine[trial.number] = trial
                    params = plan.params | suggest(trial, plan.space)
                    pool.submit(trial, params, None if pool.live else studies.snapshot(study, trial))
                finished = pool.wait(timeout=POLL_S)
                for trial, outcome in finished:
                    heart.discard(trial)
                    finish(study, trial, outcome, pool.live)
                    del mine[trial.number]
                    ran += 1
                    rows = tables.trial_rows(study.get_trials(deepcopy=False))
                    if folder:
                        tables.write_trials(folder, rows)
                    row = next((r for r in rows if r["number"] == trial.number), None)
                    if row:
                        say(tables.trial_line(row, trials))
                if not mine and not finished:
                    if not may_start(study, trials, deadline) and not waiting_for_others(study, trials, deadline):
                        break
                    time.sleep(POLL_S)
        except BaseException:
            for trial in mine.values():  # Ctrl-C or an error: what was running runs again next time
                heart.discard(trial)
                studies.fail_and_retry(study, trial)
            raise
    return summarise(plan, study, out, ran, x, y, refit, test_data, say, start, time.perf_counter() - start)


def may_start(study, trials, deadline):
    if deadline is not None and time.monotonic() >= deadline:
        return False
    return trials is None or studies.used(study, waiting=False) < trials


def waiting_for_others(study, trials, deadline):
    """With the total reached here, trials still running in other processes finish the study: wait."""
    if deadline is not None and time.monotonic() >= deadline:
        return False
    return trials is not None and bool(studies.running_elsewhere(study, ()))


def finish(study, trial, outcome, live):
    """Tell the study how a trial ended; a pool's trial reports its epochs now (they ran elsewhere)."""
    from optuna.trial import TrialState

    trial.set_user_attr("seconds", outcome["seconds"])
    trial.set_user_attr("worker", outcome["worker"])
    if not live:
        for epoch, value in enumerate(outcome["values"]):
            trial.report(value, epoch)
            trial.should_prune()  # records what the pruner keeps per trial (hyperband's rungs)
    if outcome["state"] == "fail":
        trial.set_user_attr(studies.ERROR, outcome["error"])
        study.tell(trial, state=TrialState.FAIL)
    elif outcome["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, outcome["values"][-1])


def summarise(plan, study, out, ran, x, y, refit, test_data, say, start, study_seconds):
    """The table, the importances, the pictures, the refit best model and best.json."""
    rows = tables.trial_rows(study.get_trials(deepcopy=False))
    best = tables.best_row(rows)
    counts = {state: sum(r["state"] == state for r in rows) for state in ("complete", "pruned", "failed")}
    result = TuneResult(
        rows, best, plan, out, counts, ran, 0.0, round(study_seconds, 2), importances(study), study=study
    )
    if out:
        folder = SearchFolder(out)
        tables.write_trials(folder, rows)
        from mnistlab.search.study_plots import save_study_plots

        save_study_plots(folder, rows, result.importances)
    if best is None:
        say("no trial completed: nothing to refit")
    elif refit:
        from mnistlab.search.refit import refit_params

        result.best_model, metrics = refit_params(plan.params | best["params"], x, y, test_data, out, say)
        result.test_metrics = metrics or {}
    result.wall_seconds = round(time.perf_counter() - start, 2)
    if out:
        write_best(result)
    return result


def importances(study):
    """optuna.importance.get_param_importances over the complete trials; {} with too few of them."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():  # with few trials Optuna warns that they come out equal: they do
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # fewer than two complete trials, or nothing varied
        return {}


def write_best(result):
    from mnistlab.search.store import canonical

    best = result.best or {}
    SearchFolder(result.out).write_best(
        canonical(
            {
                "strategy": result.plan.strategy,
                "prune": result.plan.prune,
                "best_trial": best.get("number"),
                "best_params": best.get("params"),
                "best_score": best.get("value"),
                "params": result.plan.params | (best.get("params") or {}),
                "validation_images": result.plan.n_val,
                "test_metrics": result.test_metrics or None,
                "trials": result.counts,
                "importances": result.importances,
                "model": SearchFolder.BEST_MODEL if result.best_model is not None else None,
                "trials_run": result.ran,
                "study_seconds": result.study_seconds,
                "wall_seconds": result.wall_seconds,
                "study": result.plan.name(),
            }
        )
    )


def tune(x, y, space=None, *, strategy="tpe", params=None, validation=None, prune="median", **options):
    """A sampled study over mnistlab's models (see the module's docstring); returns a TuneResult.

    `space` maps parameters to lists of values or ranges ("1e-4..1e-2:log", Range(...));
    `params` fixes the others; `validation` is the held-out tail (a count or a fraction;
    default 1/6 of the images, at most 10,000). Options are run_study's.
    """
    return run_study(plan_study(x, y, space, strategy, params, validation, prune), x, y, **options)
