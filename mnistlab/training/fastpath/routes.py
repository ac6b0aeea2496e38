"""Which lowered ops run through the hand-written CPU kernels (kernels/), where those are built and pay off.

The kernels compute the same functions as XLA's route, in another order: a
convolution followed by max pooling (the notebook CNN's first layer) in one call
(conv_pool.cc: 1.6x faster CNN steps), any other stride-1 convolution with no
patch matrix (conv.cc), batch norm over images in training (norm.cc), and a Dense
layer that takes the model's input (pixels, mostly zeros) skipping the zeros
(sparse_dense.cc).
"""

from dataclasses import replace

import jax

from mnistlab.training.fastpath.kernels import build, ffi
from mnistlab.training.fastpath.layers import ConvOp, DenseOp, FlattenOp, NormOp


def kernels_run_here(group):
    """Can the compiled program being built call `group`'s kernels, and do they pay off? (CPU only, a
    CPU they beat XLA on, and their library loaded.)"""
    return jax.default_backend() == "cpu" and build.pays_off(group) and build.load(group) is None


def conv_runs_on_kernels(kernel_shape):
    """Are kernels built for a stride-1 convolution with this kernel (conv.cc)?"""
    return tuple(kernel_shape[:2]) in ffi.KERNEL_SIZES and kernels_run_here("conv")


def conv_pool_runs_on_kernels(kernel_shape, pool, strides):
    """...and for this pooling after it, in the same call (conv_pool.cc)?"""
    pooled = pool == strides and pool[0] == pool[1] and 1 <= pool[0] <= ffi.MAX_POOL
    return tuple(kernel_shape[:2]) in ffi.KERNEL_SIZES and pooled and kernels_run_here("conv")


def choose_kernels(ops_, variables, layout, use_kernels):
    """The ops with their routes to the hand-written CPU kernels set, where those are built.

    Stride-1 convolutions go to the kernels in the chwn layout: with the pooling that follows
    them where conv_pool computes it, on their own otherwise; so does batch norm over images there.
    A Dense layer on the model's input (flattened or not) sees the raw input: for pixels, mostly
    zeros, which its kernels skip.
    """
    ops_ = list(ops_)
    for i, op in enumerate(ops_):
        if use_kernels and layout == "chwn" and isinstance(op, ConvOp) and op.strides == (1, 1):
            shape = tuple(variables[op.weights[0]].shape)
            if conv_runs_on_kernels(shape):
                pooled = op.pool and conv_pool_runs_on_kernels(shape, *op.pool)
                ops_[i] = replace(op, route="pooled" if pooled else "direct")
        if use_kernels and layout == "chwn" and isinstance(op, NormOp) and op.on_images and kernels_run_here("conv"):
            ops_[i] = replace(op, route="kernels")
    first = next((i for i, op in enumerate(ops_) if not isinstance(op, FlattenOp)), None)
    if use_kernels and first is not None and isinstance(ops_[first], DenseOp) and kernels_run_here("dense"):
        ops_[first] = replace(ops_[first], sparse=True)
    return tuple(ops_)
