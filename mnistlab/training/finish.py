"""A run's last step: its figures (metrics.json) and its run folder completed."""

import time
from dataclasses import dataclass

import mnistlab.backend  # noqa: F401

import keras

from mnistlab.inference import evaluate, tta_score
from mnistlab.training.config import TrainConfig
from mnistlab.training.curves import learning_curves


@dataclass
class Run:
    """What one training run produced (train()'s result; record() writes it)."""

    config: TrainConfig
    model: keras.Model
    history: dict
    metrics: dict
    out: str | None


def measure(setup, trained, validated_final_weights):
    """metrics.json's figures: the test score, with test-time augmentation's beside it, the timings,
    the target reached and where a resumed run started.

    validated_final_weights: no callback changed the weights after the last epoch's validation, so
    that validation, when it ran on the test set, is the test score (no second pass over it).
    """
    config, history, data = setup.config, trained.history, setup.data
    validated_final_weights &= not config.ema  # training ended by setting the weights to their average
    if not setup.held_out and validated_final_weights and history.get("val_loss"):
        metrics = {"test_loss": history["val_loss"][-1], "test_accuracy": history["val_accuracy"][-1]}
    else:
        metrics = evaluate(setup.model, data.x_test, data.y_test)
    metrics |= copies_score(setup.model, data, config)
    metrics["train_seconds"] = round(trained.seconds, 3)
    metrics["epochs"] = len(history.get("loss", []))
    if config.target_accuracy:
        metrics["target_accuracy"] = config.target_accuracy
        metrics["time_to_target_s"] = trained.time_to_target
    if config.time_budget:  # the plan: made now, or by the run this one resumes (config.json's epochs)
        metrics |= trained.plan.metrics() if trained.plan else {"time_budget_s": config.time_budget}
        metrics["planned_epochs"] = config.epochs
    if setup.initial_epoch:
        metrics["resumed_from_epoch"] = setup.initial_epoch
    return metrics


def copies_score(model, data, config):
    """The test-time copies' figures (tta_test_accuracy, ..., tta_seconds), {} for a run without them."""
    tta = config.test_time_augmentation()
    if not tta:
        return {}
    start = time.perf_counter()
    return tta_score(model, data.x_test, data.y_test, tta) | {"tta_seconds": round(time.perf_counter() - start, 3)}


def record(folder, run):
    """The run folder completed: model, history, metrics and curves written, the checkpoint removed."""
    folder.write_results(run.config.to_dict(), run.model, run.history, run.metrics, learning_curves(run.history))
    folder.remove_checkpoint()
