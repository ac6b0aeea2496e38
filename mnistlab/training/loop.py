"""Step 3 of the pipeline: compile and train a model as the notebook does
(minibatches, shuffling, validation every epoch) and write the run folder."""
import contextlib
import time
from dataclasses import dataclass, replace

import mnistlab.backend  # noqa: F401
import keras
import numpy as np

from mnistlab.backend import use_disk_cache
from mnistlab.data import load_dataset, one_hot, scale_pixels, shaped
from mnistlab.data.augment import epoch_images
from mnistlab.errors import UsageError
from mnistlab.inference import EVAL_BATCH, score, tta_score
from mnistlab.models import build_model, seeded
from mnistlab.optimizers import make_optimizer
from mnistlab.storage import RunFolder
from mnistlab.training import checkpoint, fastpath
from mnistlab.training.augmented import AugmentedBatches
from mnistlab.training.config import TrainConfig
from mnistlab.training.curves import learning_curves
from mnistlab.training.target import TargetAccuracy
from mnistlab.training.fastpath.progress import NotebookProgress, in_notebook


@dataclass
class Run:
    """What one training run produced."""
    config: TrainConfig
    model: keras.Model
    history: dict
    metrics: dict
    out: str | None


def compile_model(model, config, steps_per_epoch=None):
    """Compile as `config` says; a cosine schedule spans config.epochs x steps_per_epoch steps."""
    config = config.resolved()
    total_steps = steps_per_epoch * config.epochs if steps_per_epoch else None
    model.compile(loss=make_loss(config.loss, config.label_smoothing),
                  optimizer=make_optimizer(config.optimizer, config.lr, config.optimizer_defaults,
                                           schedule=config.schedule, total_steps=total_steps,
                                           warmup=config.warmup, weight_decay=config.weight_decay),
                  metrics=["accuracy"])
    return model


def make_loss(name, label_smoothing=0.0):
    """A Keras loss by name; with label smoothing, the categorical crossentropy (TrainConfig checks the name)."""
    if not label_smoothing:
        return name
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def make_model(config, n_train, layer_seeds=False):
    """A fresh model as `config` says, compiled for training on n_train samples; layer_seeds:
    each layer seeded from config.seed (models.seeded), independent of the process's random state."""
    config = config.resolved()
    model = build_model(config.model, hidden=config.hidden, dropout=config.dropout, filters=config.filters)
    if layer_seeds:
        model = seeded(model, config.seed)
    return compile_model(model, config, steps_per_epoch=-(-n_train // config.batch_size))


def split_validation(x, y, config):
    """(train x, train y, validation data): the test set, or a held-out tail of the training set."""
    if config.validation_split is None:
        return x, y, None
    n_val = max(1, int(round(len(x) * config.validation_split)))
    order = np.random.default_rng(config.seed).permutation(len(x))
    val, keep = order[:n_val], order[n_val:]
    return x[keep], y[keep], (x[val], y[val])


def fit(model, x, y, validation_data, config, verbose=1, callbacks=(), initial_epoch=0):
    """Train a compiled model from `initial_epoch` to config.epochs on inputs shaped as it takes them
    (float32, or uint8 pixels: scaled as data.scale does); returns the history of the epochs it ran.

    The fast path (whole epochs as compiled programs) trains what it can train exactly as Keras'
    fit would (fastpath.check); anything else goes through Keras' own fit.
    """
    config = config.resolved()
    if config.engine != "keras":
        epoch_inputs = ((lambda epoch: epoch_images(x, config.augment, config.seed, epoch, config.flip))
                        if config.augment or config.flip else None)
        try:
            return fastpath.fit(model, x, y, epochs=config.epochs, batch_size=config.batch_size,
                                validation_data=validation_data, shuffle=config.shuffle, seed=config.seed,
                                verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                                epoch_inputs=epoch_inputs)
        except fastpath.Unsupported as e:  # raised before any training: fall back to Keras' fit
            if config.engine == "fast":
                raise UsageError(f"--engine fast cannot train this model: {e.reason}") from None
    if verbose and in_notebook():  # Keras' bar draws with escape codes: tqdm's instead
        callbacks, verbose = [*callbacks, NotebookProgress()], 0
    if config.augment or config.flip:  # batches transformed as they are drawn (data.augment)
        data = {"x": AugmentedBatches(x, y, config.batch_size, config.augment, config.seed, config.shuffle,
                                      initial_epoch, config.flip)}
    else:
        data = {"x": scale_pixels(x), "y": y, "batch_size": config.batch_size, "shuffle": config.shuffle}
    if validation_data is not None:
        validation_data = (scale_pixels(validation_data[0]), validation_data[1])
    result = model.fit(**data, epochs=config.epochs, validation_data=validation_data,
                       validation_batch_size=EVAL_BATCH, verbose=verbose, callbacks=list(callbacks),
                       initial_epoch=initial_epoch)
    return {k: [float(v) for v in vals] for k, vals in result.history.items()}


def train(config=None, out=None, verbose=1, dataset=None, callbacks=(), resume=False, **overrides):
    """Train a model as `config` (a TrainConfig, and/or keyword overrides) says.

    With `out`, writes the run folder (config.json first, a checkpoint every epoch,
    the rest at the end), locked against other writers until the run ends (storage.folder);
    with `resume`, continues from the folder's last checkpoint.
    """
    use_disk_cache()
    config = (replace(config, **overrides) if config else TrainConfig(**overrides)).resolved()
    folder = RunFolder(out) if out else None
    with folder.start(config.to_dict()) if folder else contextlib.nullcontext():  # released however it ends
        return train_in(folder, config, out, verbose, dataset, callbacks, resume)


def train_in(folder, config, out, verbose, dataset, callbacks, resume):
    """train()'s work, the run folder `folder` (None without `out`) started and locked."""
    keras.utils.set_random_seed(config.seed)
    data = dataset or load_dataset(config.dataset, config.data_dir, verify=config.verify_data)
    x, y, held_out = split_validation(data.x_train, data.y_train, config)
    val_x, val_y = held_out if held_out else (data.x_test, data.y_test)
    model = make_model(config, len(x))
    history, initial_epoch = {}, 0
    # Callbacks of the caller's may change the weights after the last validation (restoring the best
    # ones); those marked watch_only (loggers: TensorBoard, MLflow, progress) only look.
    validated_final_weights = all(getattr(c, "watch_only", False) for c in callbacks)
    state = folder.latest_checkpoint() if folder and resume else None
    if state:
        checkpoint.restore(model, state, folder)
        history, initial_epoch = state.history, state.epoch
    saver = checkpoint.Checkpoint(folder, history) if out else None
    if saver:
        callbacks = [*callbacks, saver]
    shape = tuple(model.input_shape[1:])
    start = time.perf_counter()
    target = TargetAccuracy(config.target_accuracy, start) if config.target_accuracy else None
    if target:
        callbacks = [*callbacks, target]
    if initial_epoch < config.epochs:
        try:
            # uint8 pixels: the fast path scales them batch by batch on the device, Keras' fit here first
            new = fit(model, shaped(x, shape), one_hot(y), (shaped(val_x, shape), one_hot(val_y)),
                      config, verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch)
        except BaseException:
            if saver:  # an error or Ctrl-C mid-run: the last epoch's checkpoint is complete before it spreads
                with contextlib.suppress(Exception):  # (the error that stopped the run is the one to report)
                    saver.close()
            raise
        history = {k: list(history.get(k, [])) + v for k, v in new.items()}
    train_seconds = time.perf_counter() - start
    if held_out is None and validated_final_weights and history.get("val_loss"):
        # The last epoch's validation measured these very weights on the test set: that is the test score.
        metrics = {"test_loss": history["val_loss"][-1], "test_accuracy": history["val_accuracy"][-1]}
    else:
        metrics = score(model, data.x_test, data.y_test)
    tta = config.test_time_augmentation()
    if tta:
        tta_start = time.perf_counter()
        metrics |= tta_score(model, data.x_test, data.y_test, tta)
        metrics["tta_seconds"] = round(time.perf_counter() - tta_start, 3)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["epochs"] = len(history.get("loss", []))
    if target:
        metrics["target_accuracy"] = config.target_accuracy
        metrics["time_to_target_s"] = target.seconds
    if initial_epoch:
        metrics["resumed_from_epoch"] = initial_epoch
    run = Run(config, model, history, metrics, out)
    if out:
        folder.write_results(config.to_dict(), model, history, metrics, learning_curves(history))
        folder.remove_checkpoint()
    for callback in callbacks:  # trackers (training.tracking) record the test score too
        if hasattr(callback, "on_run_end"):
            callback.on_run_end(run)
    return run
