"""Time to accuracy: stop a run at the first epoch whose validation accuracy reaches a target."""

import time

from mnistlab.training.callbacks import RunCallback


class TargetAccuracy(RunCallback):
    """Stops training once val_accuracy >= target; `seconds` is the training time until then
    (validation included), None while the target is not reached. It stops training, but never
    changes the weights it validated (RunCallback.changes_weights: False)."""

    def __init__(self, target, start=None):
        super().__init__()
        self.target, self.start, self.seconds = target, start, None

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is None and (logs or {}).get("val_accuracy", 0.0) >= self.target:
            assert self.start is not None  # given, or set by on_train_begin
            self.seconds = round(time.perf_counter() - self.start, 3)
            # Keras sets the model before training; its own type says Model | None
            self.model.stop_training = True  # pyright: ignore[reportOptionalMemberAccess]
