"""Where mnistlab keeps files of its own between runs: the user cache folder."""
import os
from pathlib import Path


def cache_dir():
    """~/.cache/mnistlab, or $XDG_CACHE_HOME/mnistlab: datasets, compiled kernels and XLA programs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnistlab"
