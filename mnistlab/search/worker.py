"""What a search worker runs: one (parameter set, fold) fit, scored on its
held-out fold. The same function runs in this process (--jobs 1), in loky
worker processes (--jobs N) and on Dask workers (--cluster).

Light at import on purpose: XLA reads its thread settings when JAX first
loads, so a worker process must set them before anything imports Keras.
"""

import contextlib
import os
import socket
import sys
import threading
import time

from mnistlab.system import available_cpus  # noqa: F401  (search.parallel's, from here)

# Keras' random state is global to a process; a Dask worker running several
# tasks in threads must still run one fit at a time, or seeds would interleave.
FIT_LOCK = threading.Lock()

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def limit_threads(threads):
    """Keep a worker process to one XLA thread and `threads` BLAS threads; a context.

    XLA's CPU runtime has no thread-count setting, only a switch to a single
    thread, read when JAX first loads (so it takes effect in a fresh worker
    process). One thread per worker is also the fastest way to run the small
    networks of a search side by side: run as many workers as there are cores.
    BLAS (numpy) is limited through threadpoolctl. None: no limits (in-process).
    """
    if not threads:
        return contextlib.nullcontext()
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " " + SINGLE_THREAD_XLA).strip()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def fit_fold(task, params, x, y, train, test, threads=None):
    """Fit MnistClassifier(**params) on x[train], score accuracy on x[test]; returns (task, result).

    `task` comes back unchanged, telling the caller which fit finished (results arrive in any order).
    """
    with limit_threads(threads), FIT_LOCK:
        from mnistlab.backend import use_disk_cache

        from mnistlab.search.estimator import MnistClassifier

        use_disk_cache()  # before any model is built: compiled programs are kept for the next worker
        estimator = MnistClassifier(**params)
        start = time.perf_counter()
        estimator.fit(x[train], y[train])
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        score = estimator.score(x[test], y[test])
        score_time = time.perf_counter() - start
    return task, {
        "test_score": float(score),
        "fit_time": round(fit_time, 3),
        "score_time": round(score_time, 3),
        "n_train": len(train),
        "n_test": len(test),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
