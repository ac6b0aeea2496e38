"""Where a sampled study's trials run: in this process (one at a time, pruned by the study
itself), in N local worker processes (loky, as joblib's), or on a Dask cluster. The pool runners
prune each trial against a copy of the study as it stood when the trial started (study.snapshot).

A runner takes trials (submit) and gives back those that have finished (wait). On a cluster, the
training data go to every worker once; a worker killed mid-trial makes Dask run that trial again
on another, from its start, under the same trial number. Dask keeps one copy of scattered data
(its memory manager drops the others), so a killed worker may take the data with it, or the result
of a trial it had finished: those trials are cancelled, and the runner scatters the data again and
resubmits them.
"""

import concurrent.futures
import contextlib

from mnistlab.search.trial import live_pruning, run_trial
from mnistlab.system import available_cpus


class InProcess:
    """Trials one after another in this process, with all its cores."""

    live = True

    def __init__(self, x, y, n_val):
        self.data, self.n_val, self.finished = (x, y), n_val, []

    def slots(self):
        return 1

    def submit(self, trial, params, snapshot=None):
        self.finished.append((trial, run_trial(params, *self.data, self.n_val, live_pruning(trial))))

    def wait(self, timeout=None):
        finished, self.finished = self.finished, []
        return finished


class Pool:
    """Trials on worker processes: local (loky) or a Dask cluster's, through futures."""

    live = False

    def __init__(self, submit, wait, slots, data, n_val, threads, rescatter=None, connected=None):
        """wait: concurrent.futures.wait's signature. rescatter and connected, for Dask: send the data
        again, and whether the client still reaches its scheduler; while it does, a cancelled trial
        (its data or its result went with a killed worker) is resubmitted."""
        self._submit, self._wait, self._slots = submit, first_done(wait, self._resubmits), slots
        self._rescatter, self._connected = rescatter, connected
        self.data, self.n_val, self.threads, self.futures = data, n_val, threads, {}

    def slots(self):
        return self._slots()

    def _resubmits(self):
        """Whether a cancelled trial is run again (else its CancelledError is raised)."""
        return self._rescatter is not None and self._connected is not None and self._connected()

    def submit(self, trial, params, snapshot=None):
        future = self._submit(run_trial, params, *self.data, self.n_val, snapshot, self.threads)
        self.futures[future] = (trial, params, snapshot)

    def wait(self, timeout=None):
        if not self.futures:
            return []
        finished, lost = [], []
        for future in self._wait(list(self.futures), timeout):
            trial, params, snapshot = self.futures.pop(future)
            try:
                # A trial that finished on a worker killed before its result was fetched is cancelled
                # here, in result(), not before.
                finished.append((trial, future.result()))
            except concurrent.futures.CancelledError:
                if not self._resubmits():
                    raise
                lost.append((trial, params, snapshot))
        if lost:
            assert self._rescatter is not None  # nothing is lost without it: the error was raised
            self.data = self._rescatter()
            for trial, params, snapshot in lost:
                self.submit(trial, params, snapshot)
        return finished


def first_done(wait, resubmits):
    """The futures done within `timeout` seconds, at least one if any finishes in time.

    resubmits: whether cancelled futures (Dask's, while the client still reaches its scheduler) come
    back as done, for the pool to resubmit; else their CancelledError is raised.
    """

    def first(futures, timeout):
        try:
            return wait(futures, timeout=timeout, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # Dask's wait raises where concurrent.futures' returns nothing done
            return set()
        except concurrent.futures.CancelledError:  # Dask's FuturesCancelledError
            if not resubmits():
                raise
            return {future for future in futures if future.cancelled()}

    return first


@contextlib.contextmanager
def runner(x, y, n_val, jobs=None, cluster=None):
    """The runner for --jobs / --cluster (neither: this process)."""
    if cluster is not None:
        from mnistlab.search import parallel

        distributed = parallel.import_distributed()
        with parallel.dask_session(cluster, jobs, "trials") as (client, threads, connected):

            def submit(fn, *args):
                return client.submit(fn, *args, pure=False)

            # (Client.nthreads is typed as the async client's coroutine too; this synchronous one returns the dict)
            yield Pool(
                submit,
                distributed.wait,
                lambda: max(1, len(client.nthreads())),  # pyright: ignore[reportArgumentType]
                parallel.scatter(client, x, y),
                n_val,
                threads,
                rescatter=lambda: parallel.scatter(client, x, y),
                connected=connected,
            )
    elif jobs is not None and jobs > 1:
        from joblib.externals.loky import get_reusable_executor

        executor = get_reusable_executor(max_workers=jobs)
        threads = max(1, available_cpus() // jobs)
        yield Pool(executor.submit, concurrent.futures.wait, lambda: jobs, (x, y), n_val, threads)
    else:
        yield InProcess(x, y, n_val)
