"""Step 3 of the pipeline: training runs.

The training loop loads on first use: `mnistlab.training.config` is plain data, and the
command line reads it to build its parser without importing Keras (~3 s).
"""
from mnistlab.training.config import TrainConfig

__all__ = ["Run", "TrainConfig", "compile_model", "train"]


def __getattr__(name):
    if name in ("Run", "compile_model", "train"):
        from mnistlab.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
