"""A/B of two builds of the fast path's compiled training loop, in one process.

The two loops run the same 200 (or --steps) steps from the same state in turn,
--rounds times, and the median time per step of each is printed: on a machine
whose speed moves from minute to minute, alternating in one process is the
comparison that noise disturbs least.

  MNISTLAB_DATA=../shared/data .venv/bin/python bench/ab.py --model cnn --compare kernels
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/ab.py --model cnn --filters 32,64 --hidden 512 --batch-size 128
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/ab.py --model dnn --compare ynn --steps 938
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/ab.py --compare rng --dropout 0.23 --batch-size 32
  MNISTLAB_DATA=../shared/data .venv/bin/python bench/ab.py --model convnet --filters 16,32 --hidden 1024 \
      --dropout 0.3 --batch-size 128 --steps 117 --rounds 12 --compare norm   # or norm-kernels, winograd

  kernels: the CPU kernels (the convolutions; a first dense layer's sparse products) against XLA's route,
           on any CPU (MNISTLAB_KERNELS=always: also where build.NEEDS says they do not pay off)
  ynn:     XLA's CPU dots through YNNPACK's fusions (XLA's default) against its own (Eigen) dots
  rng:     dropout's random bits from ops.random_fields' counter hash against JAX's threefry
           (jax.random.bits), which it replaced
  norm:    a convnet against the same without the batch norm of its convolutions (what those cost a
           step: the most a faster batch norm could save; not a model to train)
  norm-kernels: a convnet's batch norm over images through the CPU kernels (norm.cc) against XLA's route
  crop:    the direct convolution's input gradient computed for the unpadded input against the padded
           one's, sliced after (as before the crop)
  winograd: 3x3 convolutions' forward pass and input gradient as Winograd's F(2x2, 3x3) (winograd.cc)
           against the direct kernels (conv.cc)
"""

import argparse
import os
import statistics
import time
from unittest.mock import patch

from mnistlab.backend import use_disk_cache

import jax
import jax.numpy as jnp
import keras
import numpy as np

from mnistlab import models
from mnistlab.data import load_dataset, one_hot, shaped
from mnistlab.models import build_model
from mnistlab.training import fastpath
from mnistlab.training.config import TrainConfig
from mnistlab.training.fastpath import engine, ops, routes
from mnistlab.training.fastpath.check import loss_function
from mnistlab.training.fastpath.kernels import ffi
from mnistlab.training.fastpath.lowering import lower
from mnistlab.training.loop import compile_model

YNN_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}


def threefry_fields(key, size, bits):
    """ops.random_fields as it was before its counter hash: JAX's threefry bits."""
    per_word = 32 // bits
    words = jax.random.bits(key, (-(-size // per_word),), jnp.uint32)
    return ((words[:, None] >> (jnp.arange(per_word, dtype=jnp.uint32) * bits)) & (2**bits - 1)).reshape(-1)


def padded_then_sliced(conv_direct):
    """ops.conv_direct as it was before its crop: the input padded outside the call, so its gradient is
    the padded input's, which the padding's transpose then slices (a copy of the whole tensor)."""
    return lambda x, kernel, padding: conv_direct(ops.pad_spatial(x, padding), kernel)


def without_norm(conv_bn):
    """models.conv_bn's layers less its batch normalization."""

    def conv(keras, *args, **kwargs):
        return [
            layer for layer in conv_bn(keras, *args, **kwargs) if not isinstance(layer, keras.layers.BatchNormalization)
        ]

    return conv


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    comparisons = ("kernels", "ynn", "rng", "norm", "norm-kernels", "crop", "winograd")
    p.add_argument("--compare", choices=comparisons, default="kernels")
    p.add_argument("--filters", help="e.g. 32,64 (default: the model's)")
    p.add_argument("--hidden", help="e.g. 512 (default: the model's)")
    p.add_argument("--dropout", type=float, default=0.5, help="the model's dropout rate (default 0.5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=8)
    a = p.parse_args()
    if a.compare in ("kernels", "norm", "norm-kernels", "crop", "winograd"):
        os.environ["MNISTLAB_KERNELS"] = "always"
    use_disk_cache()  # as `mnistlab train` does: the compiled programs are fetched, not rebuilt
    data = load_dataset("mnist")
    steps_per_epoch = -(-len(data.x_train) // a.batch_size)  # for a model whose recipe has a cosine schedule
    x = y = None

    def loop(use_kernels=True, options="product"):
        """The training loop of a fresh --model, compiled with these XLA options (by default, those the
        product picks), and its arguments."""
        nonlocal x, y
        keras.utils.set_random_seed(0)
        model = compile_model(
            build_model(a.model, hidden=a.hidden, filters=a.filters, dropout=a.dropout),
            TrainConfig(model=a.model),
            steps_per_epoch,
        )
        model.optimizer.build(model.trainable_variables)
        if x is None:
            x, y = (
                jax.device_put(shaped(data.x_train, tuple(model.input_shape[1:]))),
                jax.device_put(one_hot(data.y_train)),
            )
        params = [v.value for v in model.trainable_variables]
        opt_vars = [v.value for v in model.optimizer.variables]
        order, key = fastpath.epoch_plan(0, 0, len(x), a.batch_size, True)
        state = [v.value for v in model.non_trainable_variables]
        args = (params, opt_vars, state, jnp.zeros(2), x, y, jnp.asarray(order), key, np.int32(0), np.int32(a.steps))
        lowered = lower(model, fastpath.default_layout(), use_kernels)
        trainer = fastpath.Engine(lowered, loss_function(model)[0], model.optimizer, a.batch_size)
        options = engine.train_options(lowered) if options == "product" else options
        return jax.jit(trainer._train, compiler_options=options).lower(*args).compile(), args

    if a.compare == "kernels":
        variants = {"kernels": loop(True), "xla route": loop(False)}
    elif a.compare == "rng":
        variants = {"counter hash": loop()}
        with patch.object(ops, "random_fields", threefry_fields):
            variants["threefry"] = loop()
    elif a.compare == "crop":
        variants = {"crop": loop()}
        with patch.object(ops, "conv_direct", padded_then_sliced(ops.conv_direct)):
            variants["padded, sliced"] = loop()
    elif a.compare == "winograd":
        variants = {"winograd": loop()}
        with patch.object(ffi, "WINOGRAD", False):
            variants["direct"] = loop()
    elif a.compare == "norm-kernels":
        variants = {"norm kernels": loop()}
        with patch.object(routes, "NormOp", type("NoOp", (), {})):  # routes.py then sets no op's route to them
            variants["norm on XLA"] = loop()
    elif a.compare == "norm":
        variants = {"batch norm": loop()}
        with patch.object(models, "conv_bn", without_norm(models.conv_bn)):
            variants["without"] = loop()
    else:
        variants = {"YNNPACK fusions": loop(True, None), "Eigen dots": loop(True, YNN_OFF)}
    times = {name: [] for name in variants}
    for _ in range(a.rounds):
        for name, (run, args) in variants.items():
            jax.block_until_ready(run(*args))  # warm: the same inputs, so caches are in the same state
            start = time.perf_counter()
            jax.block_until_ready(run(*args))
            times[name].append((time.perf_counter() - start) / a.steps * 1e3)
    for name, ts in times.items():
        print(
            f"{a.model} {a.filters or ''} {name:16s} median {statistics.median(ts):.3f} ms/step   "
            + " ".join(f"{t:.2f}" for t in ts)
        )


if __name__ == "__main__":
    main()
