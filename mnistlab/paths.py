"""Where mnistlab keeps files of its own between runs: the user cache folder."""

import os
from pathlib import Path


def cache_dir():
    """$MNISTLAB_CACHE, else ~/.cache/mnistlab or $XDG_CACHE_HOME/mnistlab: datasets, compiled kernels
    and XLA programs.

    MNISTLAB_CACHE moves mnistlab's cache alone (a first run's cost can be measured without
    also emptying other programs' caches, such as matplotlib's font list, which XDG_CACHE_HOME moves)."""
    if os.environ.get("MNISTLAB_CACHE"):
        return Path(os.environ["MNISTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnistlab"
