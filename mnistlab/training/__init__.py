"""Step 3 of the pipeline: training runs."""
from mnistlab.training.config import TrainConfig
from mnistlab.training.loop import Run, compile_model, train

__all__ = ["Run", "TrainConfig", "compile_model", "train"]
