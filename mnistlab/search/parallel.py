"""Where a search's fits run: this process, N local worker processes (joblib's
loky backend), or a Dask cluster (its futures).

Each worker process runs one fit at a time on one XLA thread (see
worker.limit_threads), so N workers use N cores and never oversubscribe them.
"""

import contextlib
import logging
import re
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import joblib

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.search.worker import available_cpus

DASK_MISSING = "--cluster needs Dask, an optional extra: pip install 'mnistlab[dask]'"
ADDRESS = re.compile(r"(tcp|tls)://[^\s/:]+:\d+")
CONNECT_TIMEOUT = "10s"
WORKERS_TIMEOUT = 30  # seconds to wait for a cluster with no workers yet


def check_cluster(cluster):
    """--cluster's value: "local" or a scheduler address tcp://HOST:PORT."""
    if cluster is None or cluster == "local":
        return cluster
    address = cluster if "://" in cluster else "tcp://" + cluster
    if not ADDRESS.fullmatch(address):
        raise UsageError(f"--cluster {cluster!r}: expected 'local' or a scheduler address tcp://HOST:PORT")
    return address


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise MnistlabError(DASK_MISSING) from None
    return distributed


@contextlib.contextmanager
def dask_client(cluster, jobs=None):
    """A connected Client: to the scheduler at `cluster`, or to a new LocalCluster of `jobs` workers."""
    distributed = import_distributed()
    cluster = check_cluster(cluster)
    with contextlib.ExitStack() as stack:
        if cluster == "local":
            # dashboard_address=None: no dashboard (LocalCluster checks for None; its annotation says str only)
            no_dashboard: Any = None
            local = distributed.LocalCluster(
                n_workers=jobs or available_cpus(), threads_per_worker=1, processes=True, dashboard_address=no_dashboard
            )
            client = stack.enter_context(distributed.Client(stack.enter_context(local)))
        else:
            try:
                client = distributed.Client(cluster, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as e:
                raise MnistlabError(
                    f"cannot reach the Dask scheduler at {cluster} ({e}): "
                    "start it with `dask scheduler`, or check the address"
                ) from None
            stack.enter_context(client)
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except TimeoutError:
            raise MnistlabError(
                f"the Dask scheduler at {cluster} has no workers after {WORKERS_TIMEOUT} s: "
                "start some with `dask worker ADDRESS`"
            ) from None
        yield client


def dask_threads(client):
    """BLAS threads per worker process: its host's CPUs shared among the workers on that host."""
    try:
        cpus = client.run(available_cpus)
    except Exception as e:
        raise MnistlabError(
            f"the Dask workers cannot run mnistlab ({type(e).__name__}: {e}): "
            "start them from an environment where mnistlab is installed"
        ) from None
    per_host = Counter(urlparse(address).hostname for address in cpus)
    return max(1, min(n // per_host[urlparse(address).hostname] for address, n in cpus.items()))


# When the scheduler is lost, distributed's modules (the client's reconnects, its batched comm) and
# tornado's callbacks (a gather cut off) log tracebacks. "distributed" covers its modules' loggers but
# those distributed gives a level of their own; its config gives one to "distributed.client".
DASK_LOGGERS = ("distributed", "distributed.client", "tornado.application")


@contextlib.contextmanager
def quiet_cluster_logs():
    """Keep the Dask client's own logging out of the search's output: the search reports a lost
    scheduler or worker itself, in one line."""
    loggers = [logging.getLogger(name) for name in DASK_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def cluster_errors(cluster, what="fits"):
    """A lost scheduler or a task that killed every worker, told in one line (tune: what="trials")."""
    distributed = import_distributed()
    from concurrent.futures import CancelledError  # Dask's FutureCancelledError and FuturesCancelledError

    from distributed.comm.core import CommClosedError

    one = what[:-1]
    try:
        yield
    except (CancelledError, CommClosedError) as e:
        raise MnistlabError(
            f"lost the Dask scheduler at {cluster} mid-search ({type(e).__name__}); the "
            f"{what} finished so far are recorded: restart the scheduler and workers, then "
            f"rerun the same command to run the rest"
        ) from None
    except distributed.KilledWorker as e:
        raise MnistlabError(
            f"a {one} killed every Dask worker it ran on ({e}); the {what} finished so far "
            "are recorded: fix the cause (often memory), then rerun the same command"
        ) from None


@contextlib.contextmanager
def dask_session(cluster, jobs=None, what="fits"):
    """(client, BLAS threads per worker, connected) for a search on a Dask cluster (`cluster`, `jobs`:
    dask_client's), its client's logging quiet and its failures told in one line (cluster_errors).
    connected(): whether the client still reaches its scheduler."""
    import_distributed()  # first: importing distributed sets its loggers' levels, quiet_cluster_logs' after it
    with quiet_cluster_logs(), dask_client(cluster, jobs) as client:
        threads = dask_threads(client)
        with cluster_errors(cluster, what):
            yield client, threads, lambda: client.status == "running"


def scatter(client, x, y):
    """x and y on every worker, once for all the fits or trials that need them."""
    return client.scatter([x, y], broadcast=True)


@contextlib.contextmanager
def workers(jobs=None, cluster=None):
    """Where the search's fits run; yields (run, connected).

    run(fn, calls, x, y) calls fn(**call, x=x, y=y, threads=...) for each dict in `calls` and yields
    what they return, in the order they finish; threads is None for fits in this process (no limits).
    jobs: local worker processes (None: 1, or one per CPU for a LocalCluster).
    connected(): whether the Dask client still reaches its scheduler, so that fits cancelled because
    a killed worker took their data or their results with it may run again (always False locally).
    """
    if cluster is not None:
        with dask_session(cluster, jobs) as (client, threads, connected):
            yield on_dask(client, threads, connected), connected
    elif jobs is not None and jobs > 1:
        threads = max(1, available_cpus() // jobs)
        with joblib.parallel_config(backend="loky", inner_max_num_threads=threads):
            yield on_joblib(jobs, threads), lambda: False
    else:
        yield on_joblib(1, None), lambda: False


def on_joblib(n_jobs, threads):
    """workers' run for this process (n_jobs 1) or joblib's local worker processes."""

    def run(fn, calls, x, y):
        return joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            joblib.delayed(fn)(**call, x=x, y=y, threads=threads) for call in calls
        )

    return run


def on_dask(client, threads, connected):
    """workers' run on a Dask cluster, through its futures. Not through joblib's dask backend: joblib
    runs the calls in this process, not on the cluster, when the cluster has a single thread (one
    single-thread worker deployed, or left after a kill)."""
    distributed = import_distributed()

    def run(fn, calls, x, y):
        x, y = scatter(client, x, y)
        futures = [client.submit(fn, **call, x=x, y=y, threads=threads, pure=False) for call in calls]
        try:
            for future in distributed.as_completed(futures):
                # A fit whose data or result went with a killed worker comes back cancelled: result() raises.
                yield future.result()
        finally:
            # The caller runs again what it did not get; as_completed would keep these running meanwhile.
            unfinished = [future for future in futures if not future.done()]
            if unfinished and connected():
                client.cancel(unfinished)

    return run
