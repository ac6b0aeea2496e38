"""What mnistlab asks of the machine and its environment, in one place for every layer: the
off-switches, the CPUs it may use, the evaluation batch.

A leaf module (it imports nothing of mnistlab), so that the fast path, whose
imports inside mnistlab are limited (tests/test_layout.py), shares these with
the rest of the package rather than keeping copies.
"""

import os

# Samples per batch where nothing is learned (evaluation, prediction) of a dense model: big batches are
# much faster, and no small ones are needed (the fast path's image models take smaller ones: engine.py).
EVAL_BATCH = 1000


def switched_off(variable):
    """True when the environment variable says 0, off, no or false (unset: on)."""
    return os.environ.get(variable, "1").lower() in ("0", "off", "no", "false")


def available_cpus():
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
