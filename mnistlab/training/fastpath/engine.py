"""Whole epochs as compiled XLA programs: the fast path's training loop.

Keras' own fit runs one compiled step per minibatch and pays Python, data
slicing and dispatch costs on each of the 938 steps of an MNIST epoch. Here
the dataset is put on the device once, each epoch's order is a permutation
of indices into it, and the steps run inside a compiled loop
(lax.fori_loop) through the model lowered to a pure JAX function
(lowering.py) and the model's own Keras optimizer (optimizer.stateless_apply),
so every optimizer, learning rate and loss Keras offers behaves as in Keras.

Randomness (shuffle order, dropout masks) is a pure function of (seed, epoch),
so a run resumed at `initial_epoch` from restored weights and optimizer state
replays the uninterrupted run. After each epoch the trained values are written
back into the Keras model and its optimizer before the callbacks see them, so
model.save, model.evaluate and checkpoint callbacks work as after Keras' fit.

Compiled programs are cached per model structure, loss, optimizer settings and
batch size, so a search's many fits of one model compile once. Nothing here
changes JAX's global settings: the caller chooses its compilation cache.
"""

import itertools
import json
from collections import OrderedDict

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import lax

from mnistlab import streams
from mnistlab.system import EVAL_BATCH
from mnistlab.training.fastpath import widths
from mnistlab.training.fastpath.check import check, loss_function
from mnistlab.training.fastpath.lowering import lower
from mnistlab.training.fastpath.progress import progress_logger
from mnistlab.training.fastpath.unsupported import Unsupported

PROGRESS_UPDATES = 20  # progress bar refreshes per epoch when verbose=1
# A convolutional model's activations per sample are ~50x a dense model's: evaluating it in
# batches of 250 rather than 1000 keeps peak memory 125 MB lower at the same speed. Through the
# hand-written kernels (chwn), batches of 128 keep each batch in cache: 0.18 s against 0.23-0.27 s.
IMAGE_EVAL_BATCH = {"nhwc": 250, "chwn": 128}
EVAL_LAYOUT = "nhwc"
CACHE_SIZE = 16  # compiled engines kept (one per model structure x optimizer x batch size)

_engines = OrderedDict()
_evaluations = OrderedDict()  # (eval signature, layout, kernels, loss) -> an Engine's compiled evaluate


def default_layout():
    """The image layout for this device: measured fastest (BENCHMARKS.md, 'Convolution lowerings').

    On CPU, XLA's convolutions are slow for the notebook's small filter
    counts and one im2col matrix product per convolution wins by far; on a
    GPU, XLA's convolutions go to cuDNN.
    """
    return "chwn" if jax.default_backend() == "cpu" else "nhwc"


def optimizer_key(optimizer):
    """An optimizer's class and settings. The learning rate is a variable, passed in at run
    time, so optimizers differing only in their rate share one compiled program."""
    config = optimizer.get_config()
    rest = {k: v for k, v in config.items() if k not in ("name", "learning_rate")}
    if not isinstance(config.get("learning_rate"), (int, float)):
        rest["learning_rate"] = config.get("learning_rate")  # a schedule: part of the program
    return type(optimizer), json.dumps(rest, sort_keys=True, default=str)


class Engine:
    """The compiled programs for one model structure, loss, optimizer setting and batch size."""

    def __init__(self, lowered, loss_fn, optimizer, batch_size, eval_lowered=None, evaluate=None):
        """evaluate: another Engine's compiled evaluation of the same eval_lowered and loss, to share."""
        self.lowered, self.loss_fn, self.optimizer, self.batch_size = lowered, loss_fn, optimizer, batch_size
        self.eval_lowered = eval_lowered or lowered
        self.train = jax.jit(self._train, compiler_options=train_options(lowered))
        self.evaluate = evaluate or jax.jit(self._evaluate)

    def _train(self, params, opt_vars, state, sums, x, y, order, key, start, stop, knobs=None):
        """Steps start..stop-1 of an epoch; sums accumulates (loss sum, correct count); state: the
        non-trainable variables (batch normalization's moving statistics); knobs: a shared
        program's inputs (widths.py)."""
        b, n = self.batch_size, x.shape[0]
        forward, loss_fn, optimizer = self.lowered.forward, self.loss_fn, self.optimizer

        def step(i, carry):
            params, opt_vars, state, sums = carry
            idx = lax.dynamic_slice(order, (i * b,), (b,))
            # The last batch is short: its padding rows weigh 0, so it trains exactly like Keras' short batch.
            weight = (i * b + jnp.arange(b) < n).astype(jnp.float32)
            xb, yb = as_float(x[idx]), y[idx]

            def objective(params):
                probs, new_state = forward(params, xb, True, jax.random.fold_in(key, i), state, weight, knobs)
                losses = loss_fn(yb, probs)
                return jnp.sum(weight * losses) / jnp.sum(weight), (probs, losses, new_state)

            (_, (probs, losses, state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
            params, opt_vars = optimizer.stateless_apply(opt_vars, grads, params)
            hits = hit(yb, probs)
            return params, opt_vars, state, sums + jnp.stack([jnp.sum(weight * losses), jnp.sum(weight * hits)])

        return lax.fori_loop(start, stop, step, (params, opt_vars, state, sums))

    def _evaluate(self, params, state, x, y, knobs=None):
        """(mean loss, accuracy) over x, y in large batches."""
        n = x.shape[0]
        chunk = min(n, IMAGE_EVAL_BATCH[self.eval_lowered.layout] if self.lowered.images else EVAL_BATCH)
        chunks = -(-n // chunk)
        pad = chunks * chunk - n
        xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((chunks, chunk) + x.shape[1:])
        ys = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape((chunks, chunk) + y.shape[1:])
        ws = (jnp.arange(chunks * chunk) < n).astype(jnp.float32).reshape(chunks, chunk)

        def one(args):
            xb, yb, w = args
            probs = self.eval_lowered.apply(params, as_float(xb), False, state=state, knobs=knobs)
            return jnp.sum(w * self.loss_fn(yb, probs)), jnp.sum(w * hit(yb, probs))

        losses, hits = lax.map(one, (xs, ys, ws))
        return jnp.sum(losses) / n, jnp.sum(hits) / n


def train_options(lowered):
    """XLA options for the training loop, measured per kind of model (BENCHMARKS.md, session 4).

    On a CPU, XLA hands dots to YNNPACK, fused with their neighbours. For dense models
    its own (Eigen) dots are faster in the compiled loop: DNN steps 0.87-0.89 ms against
    0.99-1.38 ms, three A/B runs in one process. Convolutional models keep the default
    (CNN steps 2.59 ms with YNNPACK against 2.98 ms without).
    """
    if jax.default_backend() != "cpu":
        return None
    # XLA's level-1 backend optimisation compiles the epoch a second sooner on a first run and
    # gives the very same bits and step times (docs/performance.md, "The first run").
    quick = {"xla_backend_optimization_level": 1}
    return quick if lowered.images else {**quick, "xla_cpu_experimental_ynn_fusion_type": ""}


def as_float(x):
    """A batch as the model takes it: uint8 pixels become float32 in [0, 1] with the very bits of
    data.scale; float input passes through. XLA turns a division by a scalar into a multiplication
    by its reciprocal, off in the last bit for half the pixel values; dividing by a whole array of
    255s kept behind a barrier keeps the true division (tests/training/test_fast.py checks the bits)."""
    if x.dtype != jnp.uint8:
        return x
    return x.astype(jnp.float32) / lax.optimization_barrier(jnp.full(x.shape, 255, jnp.float32))


def on_device(x):
    """uint8 images stay uint8 on the device (a quarter of float32's memory, scaled batch by batch in
    the compiled step); anything else becomes float32. device_put copies once, where jnp.asarray
    would hold a second, transient copy."""
    x = np.asarray(x)
    return jax.device_put(x if x.dtype == np.uint8 else x.astype(np.float32, copy=False))


def hit(y_true, probs):
    """Keras' 'accuracy' for one-hot or integer labels: is the top class the true one?"""
    predicted = jnp.argmax(probs, axis=-1)
    truth = jnp.argmax(y_true, axis=-1) if y_true.ndim > 1 and y_true.shape[-1] > 1 else y_true.reshape(-1)
    return (predicted == truth.astype(predicted.dtype)).astype(jnp.float32)


def epoch_plan(seed, epoch, n, batch_size, shuffle):
    """The epoch's sample order, padded to whole batches, and its dropout key: functions of (seed, epoch) only.

    The order is drawn on the host (numpy's PCG64): a device-side permutation
    would cost a sort and its compilation, for an array of a few hundred kilobytes.
    """
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    order = rng.permutation(n) if shuffle else np.arange(n)
    steps = -(-n // batch_size)
    order = np.concatenate([order, order[: steps * batch_size - n]]).astype(np.int32)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), streams.DROPOUT)
    return order, key


def engine_for(model, batch_size, layout=None):
    """The cached Engine for this model's structure, or a new one."""
    return engine_and_sharing(model, batch_size, layout)[0]


def engine_and_sharing(model, batch_size, layout=None, shared=False):
    """(Engine, widths.Shared or None): with `shared`, the Engine models of other widths and
    dropout rates share (widths.py), and how this model runs through it."""
    lowered = lower(model, layout or default_layout(), shared=shared)
    # Evaluation has no backward pass: XLA's own convolutions beat im2col there on a CPU too
    # (CNN, 10,000 test images: 0.59 s against 0.77 s; BENCHMARKS.md), but not the hand-written
    # convolution + pooling kernels (0.18 s against 0.44 s).
    eval_lowered = lower(model, EVAL_LAYOUT, shared=shared) if lowered.images and not lowered.kernels else lowered
    loss_fn, loss_key = loss_function(model)
    key = (lowered.signature, loss_key, optimizer_key(model.optimizer), int(batch_size))
    engine = _engines.get(key)
    if engine is None:
        optimizer = model.optimizer
        if lowered.shared is not None:
            optimizer = widths.template_optimizer(optimizer, lowered.shared.shapes, model.trainable_variables)
        # Evaluation depends on neither the optimizer nor the batch size: a study's trials of one
        # structure share its program (a compilation of a second or more each, cold).
        eval_key = (eval_lowered.signature, eval_lowered.layout, eval_lowered.kernels, loss_key)
        engine = _engines[key] = Engine(
            lowered, loss_fn, optimizer, int(batch_size), eval_lowered, _evaluations.get(eval_key)
        )
        _evaluations[eval_key] = engine.evaluate
        _evaluations.move_to_end(eval_key)
        for cache in (_engines, _evaluations):
            while len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
    _engines.move_to_end(key)
    return engine, lowered.shared


def fit(
    model,
    x,
    y,
    *,
    epochs,
    batch_size,
    validation_data=None,
    shuffle=True,
    seed=0,
    verbose=1,
    callbacks=(),
    initial_epoch=0,
    layout=None,
    epoch_inputs=None,
):
    """Train a compiled Keras model like model.fit, epoch by epoch in compiled programs.

    x: inputs shaped as the model takes them, float32 or uint8 pixels (scaled to [0, 1] on the device);
    y: one-hot (or integer) labels. epoch_inputs: epoch -> that epoch's x (augmented images), same
    shape and dtype as x, row for row; None trains on x every epoch.
    Returns the history dict: loss, accuracy (and val_loss, val_accuracy with validation_data).
    """
    reason = check(model)
    if reason:
        raise Unsupported(reason)
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    engine, sharing = engine_and_sharing(model, batch_size, layout, widths.sharing())
    knobs = sharing.knobs if sharing else None
    x, y = on_device(x), jax.device_put(np.asarray(y))
    if validation_data is not None:
        val_x, val_y = on_device(validation_data[0]), jax.device_put(np.asarray(validation_data[1]))
    n = int(x.shape[0])
    steps = -(-n // int(batch_size))

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), model=model, verbose=verbose, epochs=epochs, steps=steps
    )
    progress = progress_logger(verbose)  # Keras' bar in a terminal, tqdm's in a notebook
    if progress:
        progress.set_params({"verbose": verbose, "epochs": epochs, "steps": steps})
        progress.set_model(model)
        progress.on_train_begin()
    updates = max(1, min(PROGRESS_UPDATES, steps)) if verbose == 1 else 1
    bounds = [round(steps * k / updates) for k in range(updates + 1)]

    history = {}
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        # Read the state each epoch: callbacks may have changed it (a learning rate schedule), and
        # Keras' evaluate() in a callback donates, i.e. deletes, the arrays it was handed.
        params = [v.value for v in model.trainable_variables]
        opt_vars = [v.value for v in optimizer.variables]
        if sharing:  # zero units up to the shared program's widths
            params = [widths.pad(v, shape) for v, shape in zip(params, sharing.shapes)]
            opt_vars = [widths.pad(v, t.shape) for v, t in zip(opt_vars, engine.optimizer.variables)]
        state = [v.value for v in model.non_trainable_variables]
        if progress:
            progress.on_epoch_begin(epoch)
        order, key = epoch_plan(int(seed), epoch, n, int(batch_size), shuffle)
        order = jnp.asarray(order)
        epoch_x = x if epoch_inputs is None else on_device(epoch_inputs(epoch))
        # Dispatch every chunk first (JAX runs them asynchronously, back to back), then read
        # each chunk's running sums as it finishes to move the progress bar.
        sums = jnp.zeros(2, jnp.float32)
        partial = []
        for start, stop in itertools.pairwise(bounds):
            params, opt_vars, state, sums = engine.train(
                params, opt_vars, state, sums, epoch_x, y, order, key, np.int32(start), np.int32(stop), knobs
            )
            partial.append((stop, sums))
        if validation_data is not None:
            # As Keras' fit: the callbacks see the epoch's weights before the validation, which takes
            # the state they leave (training.precise_bn recomputes batch norm's statistics there).
            write_back(model, params, opt_vars, state)
            callback_list.on_test_begin()
            state = [v.value for v in model.non_trainable_variables]
            val = engine.evaluate(params, state, val_x, val_y, knobs)
        for stop, s in partial:
            seen = min(stop * batch_size, n)
            loss_sum, hits = (float(v) for v in np.asarray(s))
            logs = {"accuracy": hits / seen, "loss": loss_sum / seen}
            if stop < steps:
                # Batches run inside compiled loops: batch hooks fire at progress points only,
                # and the model's variables are current at epoch ends only.
                callback_list.on_train_batch_end(stop - 1, logs)
                if progress:
                    progress.on_train_batch_end(stop - 1, logs)
        if validation_data is not None:
            logs["val_accuracy"], logs["val_loss"] = float(val[1]), float(val[0])
        else:  # (with validation, written back before it)
            write_back(model, params, opt_vars, state)
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        if progress:
            progress.on_epoch_end(epoch, logs)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    if epochs > initial_epoch:  # as Keras' fit ends: with use_ema, the weights become their average
        optimizer.finalize_variable_values(model.trainable_variables)
    callback_list.on_train_end(logs={k: v[-1] for k, v in history.items()})
    return {k: history[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history}


def write_back(model, params, opt_vars, state=()):
    """Put trained values into the Keras model and optimizer, so save/evaluate/callbacks see them
    (a shared program's padded values cut to the variables' own shapes)."""
    for variable, value in zip(model.trainable_variables, params):
        variable.assign(widths.unpad(value, variable.shape))
    for variable, value in zip(model.non_trainable_variables, state):
        variable.assign(value)
    for variable, value in zip(model.optimizer.variables, opt_vars):
        variable.assign(widths.unpad(value, variable.shape))
