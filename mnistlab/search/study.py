"""A sampled study's Optuna side: where it is stored, how it samples and prunes, how many trials
it still owes, and how it takes back the trials of a process that died.

Storage: a journal file in the search folder (Optuna's JournalStorage with a JournalFileBackend:
one appended line per change, so a kill -9 loses at most a half-written last line, which Optuna
skips), or an Optuna RDB URL (sqlite:///..., postgresql://...) that several machines share.

Trials of dead processes: Optuna leaves a trial RUNNING when its process is killed. Each trial
carries its owner (host:pid of the process driving it) and a heartbeat (refreshed every
HEARTBEAT_S seconds while it runs) as user attributes, on any storage. A RUNNING trial whose
owner is a dead process on this machine, or whose heartbeat is older than GRACE_S seconds, is
failed and queued again with Optuna's RetryHeartbeatStaleTrialCallback: a WAITING copy with the
same parameters, which the next ask() hands out first.

The budget (--trials N): trials that have run or are running count, except those retried (their
copy counts instead) and surplus ones; a trial asked for when N are already counted below its
number (two processes asked at the same moment) is failed at once as surplus, untrained, and left
out of the results, so a shared study ends at exactly N.
"""

import hashlib
import json
import os
import socket
import threading
import time
import warnings

from mnistlab.errors import MnistlabError, UsageError

JOURNAL = "study.journal"
HEARTBEAT_S = 10
GRACE_S = 60
MAX_RETRY = 3  # a trial whose process dies this often is left failed (as Dask's allowed-failures)
OWNER, BEAT, SURPLUS, ERROR = "owner", "heartbeat", "surplus", "error"  # user attributes
PRUNERS = ("median", "hyperband", "none")
STRATEGIES = ("random", "tpe")
SCHEMA_TRIES = 4


def quiet_optuna():
    """Optuna's per-trial log lines and its experimental-feature warnings stay out of the output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def study_name(identity):
    """The study's name in its storage: a hash of what decides its trials' scores."""
    return "mnistlab-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def check_storage_url(url):
    """--storage: an Optuna RDB URL, checked for its form before anything runs."""
    if url is None:
        return None
    if "://" not in str(url):
        raise UsageError(
            f"--storage {url!r}: expected an Optuna RDB URL such as sqlite:///study.db or postgresql://user@host/db"
        )
    return str(url)


def open_storage(folder, url=None):
    """The study's storage: the search folder's journal file, or the RDB at `url`."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url is None:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, JOURNAL)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    try:
        for attempt in range(SCHEMA_TRIES):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            except Exception as e:
                # Two processes opening a new database both create Optuna's tables: the loser's
                # CREATE fails (IntegrityError, ProgrammingError); the tables are there a moment later.
                if type(e).__name__ not in ("IntegrityError", "ProgrammingError") or attempt == SCHEMA_TRIES - 1:
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as e:
        missing = getattr(e.__cause__, "name", None) or e.name or "its module"
        raise MnistlabError(
            f"--storage {url}: its database driver is not installed (no {missing}): for "
            "PostgreSQL, pip install 'psycopg[binary]' (or name another driver in the URL)"
        ) from None
    except Exception as e:
        detail = " ".join(str(e).split())[:300]
        raise MnistlabError(f"--storage {url}: cannot open the study database ({type(e).__name__}: {detail})") from None


def make_sampler(strategy, seed):
    import optuna

    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(kind, epochs):
    """median: Optuna's MedianPruner after 3 finished trials, from the second epoch on;
    hyperband: HyperbandPruner over 1..epochs epochs; none: every trial runs to its end."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, int(epochs)), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(name, storage, sampler, pruner):
    import optuna

    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )


def sampler_seed(seed, study, shared):
    """The sampler's seed: `seed` for a new study, so a study reruns the same; mixed with the trial
    count when it continues (a restarted sampler must not draw the first trials' values again), and
    with this process when the storage is shared (two machines must not draw the same values)."""
    if not study.trials and not shared:
        return seed
    mix = f"{seed}:{len(study.trials)}" + (f":{owner()}" if shared else "")
    return int(hashlib.sha256(mix.encode()).hexdigest()[:8], 16)


# -- owners, heartbeats, recovery


def owner():
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def claim(trial):
    """Mark a trial as this process's, alive now."""
    trial.set_user_attr(OWNER, owner())
    trial.set_user_attr(BEAT, time.time())


def is_stale(frozen, mine, now):
    """A RUNNING trial whose process is gone: a dead pid on this host, or a heartbeat older than GRACE_S.
    A retried trial's copy inherits its original's attributes: those older than its start do not count."""
    if frozen.number in mine:
        return False
    started = frozen.datetime_start.timestamp() if frozen.datetime_start else now
    beat = frozen.user_attrs.get(BEAT, 0)
    if beat < started - 1:
        return now - started > GRACE_S
    host, _, pid = str(frozen.user_attrs.get(OWNER, "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
        return True
    return now - beat > GRACE_S


def recover(study, mine=()):
    """Fail the stale RUNNING trials and queue a retry of each; returns their numbers."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    now, recovered = time.time(), []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(frozen, set(mine), now):
            continue
        try:
            study.tell(frozen.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed (and retried) it first
        retry(study, study.get_trials(deepcopy=True)[frozen.number])
        recovered.append(frozen.number)
    return recovered


def fail_and_retry(study, trial):
    """Fail a trial this process was running when it stopped (Ctrl-C, an error) and queue it again."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    try:
        study.tell(trial, state=TrialState.FAIL)
    except Exception:
        return
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, study.get_trials(deepcopy=True)[trial.number])


class Heartbeat:
    """A thread refreshing the heartbeat of this process's running trials every HEARTBEAT_S seconds."""

    def __init__(self, interval=HEARTBEAT_S):
        self.interval, self.trials, self.lock = interval, {}, threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, name="mnistlab-heartbeat", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def add(self, trial):
        with self.lock:
            self.trials[trial.number] = trial

    def discard(self, trial):
        with self.lock:  # before the trial is told: a finished trial's attributes cannot change
            self.trials.pop(trial.number, None)

    def beat(self):
        while not self.stop.wait(self.interval):
            with self.lock:
                for trial in list(self.trials.values()):
                    try:
                        trial.set_user_attr(BEAT, time.time())
                    except Exception:
                        pass


# -- the budget


def retried(trials):
    """Numbers of the trials that were failed and queued again (their copies stand for them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counts(trial, done):
    """Does this trial use up one of the study's --trials? (`done`: retried numbers)"""
    from optuna.trial import TrialState

    if trial.user_attrs.get(SURPLUS):
        return False
    return trial.state != TrialState.FAIL or trial.number not in done


def used(study, below=None, waiting=True):
    """Trials counted against the budget (below trial number `below`; waiting: count queued ones)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = retried(trials)
    return sum(
        1
        for t in trials
        if (below is None or t.number < below) and counts(t, done) and (waiting or t.state != TrialState.WAITING)
    )


def mark_surplus(study, trial):
    from optuna.trial import TrialState

    trial.set_user_attr(SURPLUS, True)
    study.tell(trial, state=TrialState.FAIL)


def running_elsewhere(study, mine):
    from optuna.trial import TrialState

    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number not in mine]


def snapshot(study, trial):
    """What a worker needs to prune a trial as this study would: its name, pruner and earlier trials."""
    earlier = [t for t in study.get_trials(deepcopy=True) if t.number < trial.number]
    return study.study_name, study.pruner, earlier
