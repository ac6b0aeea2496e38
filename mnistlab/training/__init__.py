"""Step 3 of the pipeline: training runs.

    loop.py        train(): prepare, the epochs, finish; fit(): the engine that can train the model
    prepare.py     before the first epoch: run folder, seed, data and validation split, model, resume
    finish.py      after the last: metrics.json's figures, the run folder completed
    ensemble.py    --members N: N runs one after another, their probabilities averaged in one model
    callbacks.py   RunCallback: the hooks a run calls at each epoch's end, at its end, on failure
    compile.py     a model built and compiled as a TrainConfig says
    config.py      TrainConfig: what config.json holds
    checkpoint.py  per-epoch checkpoints, so a killed run resumes
    target.py, tracking.py, augmented.py, curves.py, presets.py: a target accuracy, TensorBoard and
                   MLflow loggers, augmented batches for Keras' fit, the learning curves, named recipes
    fastpath/      whole epochs as compiled programs, and the progress display

The training loop loads on first use: `mnistlab.training.config` is plain data, and the
command line reads it to build its parser without importing Keras (~3 s).
"""

from typing import TYPE_CHECKING

from mnistlab.training.config import TrainConfig

if TYPE_CHECKING:  # the names __getattr__ loads on first use, as type checkers and editors see them
    from mnistlab.training.callbacks import RunCallback
    from mnistlab.training.loop import Run, compile_model, train

__all__ = ["Run", "RunCallback", "TrainConfig", "compile_model", "train"]


def __getattr__(name):
    if name in ("Run", "compile_model", "train"):
        from mnistlab.training import loop

        return getattr(loop, name)
    if name == "RunCallback":
        from mnistlab.training.callbacks import RunCallback

        return RunCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
