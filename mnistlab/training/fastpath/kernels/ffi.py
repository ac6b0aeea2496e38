"""The kernels' calls as JAX functions: one XLA FFI custom call each, with its result shapes.

Only shapes live here; the library behind the calls is built and registered by
build.py, and the constants below are those the C++ side was built with
(common.h; build.py refuses a library that disagrees).
"""

import jax
import jax.numpy as jnp
import numpy as np

TARGETS = {
    "conv": (
        "ConvPoolForward",
        "ConvPoolKernelGrad",
        "ConvForward",
        "ConvForwardWinograd",
        "ConvKernelGrad",
        "ConvInputGrad",
        "ConvInputGradWinograd",
        "NormMoments",
        "NormGrad",
    ),
    "dense": ("SparseDenseForward", "SparseDenseKernelGrad"),
}  # per library (build.GROUPS)
LANES = 16  # the batch axis is cut into vectors of 16 (kLanes)
CHUNK = 32  # samples per chunk of the sparse products' lists (kChunk)
MAX_POOL = 15  # the largest pooling window conv_pool takes (kMaxPool)
KERNEL_SIZES = {(3, 3), (5, 5)}  # the kernel gradients are built for these (kKernelSizes)
# 3x3 convolutions summing over this many channels or more run as Winograd's F(2x2, 3x3); a first
# layer's one channel gains nothing from it (as fast as conv.cc's direct kernel at 1 channel).
WINOGRAD = True
WINOGRAD_MIN_CHANNELS = 2


def pad_batch(x):
    """Pad the last (batch) axis to whole vectors of LANES; zeros contribute nothing."""
    extra = -x.shape[-1] % LANES
    return x if not extra else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def conv_pool_forward(x, kernel, pool):
    """max over p x p windows of conv(x, kernel), and each window's argmax (its position as a byte):
    (C, H, W, N), (KH, KW, C, O) -> two (O, PH, PW, N) arrays; N a multiple of LANES."""
    _, h, w, n = x.shape
    kh, kw, _, o = kernel.shape
    shape = (o, (h - kh + 1) // pool, (w - kw + 1) // pool, n)
    call = jax.ffi.ffi_call(
        "mnistlab_ConvPoolForward", (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8))
    )
    return call(x, kernel, pool=np.int64(pool))


def conv_pool_kernel_grad(x, kernel, dy, where, pool):
    """The kernel's gradient of `conv_pool_forward` given the pooled gradient dy and forward's argmax."""
    call = jax.ffi.ffi_call("mnistlab_ConvPoolKernelGrad", jax.ShapeDtypeStruct(kernel.shape, jnp.float32))
    return call(x, kernel, dy, where, pool=np.int64(pool))


def winograd(kernel_shape, channels):
    """Whether a convolution of this kernel summing over `channels` runs as Winograd's F(2x2, 3x3)
    (winograd.cc: the best preset's forward passes 1.5-2.4x, input gradients 1.6-1.7x as fast as the
    direct kernels' on a 2-core Zen 3, BENCHMARKS.md), else directly (conv.cc)."""
    return WINOGRAD and tuple(kernel_shape[:2]) == (3, 3) and channels >= WINOGRAD_MIN_CHANNELS


def conv_forward(x, kernel):
    """A stride-1 'valid' convolution: (C, H, W, N), (KH, KW, C, O) -> (O, OH, OW, N); N a multiple of LANES."""
    c, h, w, n = x.shape
    kh, kw, _, o = kernel.shape
    target = "mnistlab_ConvForwardWinograd" if winograd(kernel.shape, c) else "mnistlab_ConvForward"
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((o, h - kh + 1, w - kw + 1, n), jnp.float32))
    return call(x, kernel)


def conv_kernel_grad(x, dy, kernel_shape):
    """The kernel's gradient of conv_forward given the output's gradient dy."""
    return jax.ffi.ffi_call("mnistlab_ConvKernelGrad", jax.ShapeDtypeStruct(kernel_shape, jnp.float32))(x, dy)


def conv_input_grad(dy, kernel, x_shape, top=0, left=0):
    """The input's gradient of conv_forward given the output's gradient dy, for the x_shape input whose
    padding was `top` rows and `left` columns (the gradient of the padding itself is not computed)."""
    target = "mnistlab_ConvInputGradWinograd" if winograd(kernel.shape, kernel.shape[3]) else "mnistlab_ConvInputGrad"
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x_shape, jnp.float32))
    return call(dy, kernel, top=np.int64(top), left=np.int64(left))


def norm_moments(x, w):
    """Per channel of x (C, H, W, N), the (mean, variance) over positions and samples, each sample
    weighted by w (N,): -> (C, 2)."""
    return jax.ffi.ffi_call("mnistlab_NormMoments", jax.ShapeDtypeStruct((x.shape[0], 2), jnp.float32))(x, w)


def norm_grad(g, x, w, params, relu):
    """Batch norm's input gradient given the output's, g, and per channel (scale, shift, mean, inv)
    (params, (C, 4)), through the ReLU after it where relu: -> dx, and per channel (sum of dz, sum of
    dz (x - mean)), dz being g where the ReLU let y through."""
    call = jax.ffi.ffi_call(
        "mnistlab_NormGrad",
        (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((x.shape[0], 2), jnp.float32)),
    )
    return call(g, x, w, params, relu=np.int64(relu))


def sparse_dense_forward(x, w):
    """x @ w over the nonzero entries of x: (N, K), (K, M) -> (N, M), and the lists of x's nonzero
    entries that sparse_dense_kernel_grad takes."""
    n, k = x.shape
    pairs, chunks = (k + 1) // 2, -(-n // CHUNK)
    call = jax.ffi.ffi_call(
        "mnistlab_SparseDenseForward",
        (
            jax.ShapeDtypeStruct((n, w.shape[1]), jnp.float32),
            jax.ShapeDtypeStruct((chunks, pairs + 1), jnp.int32),
            jax.ShapeDtypeStruct((n * pairs,), jnp.int32),
            jax.ShapeDtypeStruct((n * pairs, 2), jnp.float32),
        ),
    )
    y, *lists = call(x, w)
    return y, tuple(lists)


def sparse_dense_kernel_grad(lists, dy, k):
    """x^T @ dy over the nonzero entries of x, given x's lists from sparse_dense_forward: -> (K, M)."""
    call = jax.ffi.ffi_call("mnistlab_SparseDenseKernelGrad", jax.ShapeDtypeStruct((k, dy.shape[1]), jnp.float32))
    return call(*lists, dy)
