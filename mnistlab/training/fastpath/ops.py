"""The array operations of the lowered models, and the custom gradients that make them fast.

Kept apart from the op classes (layers.py: which op a layer becomes) so each
can be tested on its own against XLA's reference: every function here computes
the same values as a plain JAX/XLA expression (tests/training/test_fast.py,
tests/training/test_kernels.py), by a route that XLA's CPU backend runs faster.

Image tensors here are (C, H, W, N) ("chwn", the batch as the vector axis) or
Keras' NHWC; conv_pool, conv_direct, batch_norm_chwn and sparse_dense call the
hand-written CPU kernels (kernels/), the others are pure JAX.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from mnistlab.training.fastpath.kernels import ffi as kernels


def conv_nhwc(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def same_padding(size, k, s):
    """(before, after) padding of Keras' 'same' for one spatial axis."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def spatial_padding(shape, kernel_shape, strides, padding):
    """((top, bottom), (left, right)): the zeros Keras' padding mode adds around a (C, H, W, N) tensor."""
    if padding != "same":
        return (0, 0), (0, 0)
    (kh, kw), (sh, sw) = kernel_shape[:2], strides
    return same_padding(shape[1], kh, sh), same_padding(shape[2], kw, sw)


def pad_spatial(x, padding):
    """A (C, H, W, N) tensor with `padding` ((top, bottom), (left, right)) zeros around each image."""
    return jnp.pad(x, ((0, 0), *padding, (0, 0)))


def pad_chwn(x, kernel_shape, strides, padding):
    """A (C, H, W, N) tensor padded as Keras' padding mode says, for a 'valid' convolution."""
    if padding != "same":
        return x
    return pad_spatial(x, spatial_padding(x.shape, kernel_shape, strides, padding))


def conv_chwn(x, kernel, strides, padding):
    """Convolution of a (C, H, W, N) tensor as one matrix product over im2col patches."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    x = pad_chwn(x, kernel.shape, strides, padding)
    if (sh, sw) == (1, 1):
        return conv_chwn_unit(x, kernel)
    _, h, w, n = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    # Row order (i, j, cin) matches the HWIO kernel reshaped to (kh*kw*cin, cout).
    patches = jnp.stack(
        [x[:, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw, :] for i in range(kh) for j in range(kw)]
    )
    y = kernel.reshape(kh * kw * cin, cout).T @ patches.reshape(kh * kw * cin, oh * ow * n)
    return y.reshape(cout, oh, ow, n)


def im2col(x, kh, kw):
    """(C, H, W, N) -> (kh*kw, C, oh, ow, N) patches of a stride-1 'valid' convolution.

    Written as in-place slice updates of one buffer: XLA's CPU backend copies
    those at memory speed, where a stack of slices (and autodiff's pads and adds
    for its transpose) runs several times slower.
    """
    c, h, w, n = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    patches = jnp.zeros((kh * kw, c, oh, ow, n), x.dtype)
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        patches = lax.dynamic_update_slice(patches, x[None, :, i : i + oh, j : j + ow, :], (k, 0, 0, 0, 0))
    return patches


def col2im(patches, shape):
    """The transpose of im2col: each patch added back where it came from."""
    kk, c, oh, ow, n = patches.shape
    kw = shape[2] - ow + 1
    x = jnp.zeros(shape, patches.dtype)
    for k in range(kk):
        i, j = divmod(k, kw)
        current = lax.dynamic_slice(x, (0, i, j, 0), (c, oh, ow, n))
        x = lax.dynamic_update_slice(x, current + patches[k], (0, i, j, 0))
    return x


@jax.custom_vjp
def conv_chwn_unit(x, kernel):
    return conv_chwn_unit_fwd(x, kernel)[0]


def conv_chwn_unit_fwd(x, kernel):
    kh, kw, cin, cout = kernel.shape
    _, h, w, n = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    patches = im2col(x, kh, kw).reshape(kh * kw * cin, oh * ow * n)
    matrix = kernel.reshape(kh * kw * cin, cout)
    y = (matrix.T @ patches).reshape(cout, oh, ow, n)
    return y, (patches, matrix, x.shape, kernel.shape)


def conv_chwn_transpose(dy, kernel, x_shape):
    """The input's gradient of a stride-1 'valid' convolution: (Cout, OH, OW, N) -> x_shape.

    Unused for a first layer (its input needs no gradient): XLA drops it then."""
    kh, kw, cin, cout = kernel.shape
    d_patches = kernel.reshape(kh * kw * cin, cout) @ dy.reshape(cout, -1)
    return col2im(d_patches.reshape((kh * kw, cin) + dy.shape[1:]), x_shape)


def conv_chwn_unit_bwd(residuals, dy):
    patches, matrix, x_shape, k_shape = residuals
    d_kernel = (patches @ dy.reshape(k_shape[3], -1).T).reshape(k_shape)
    return conv_chwn_transpose(dy, matrix.reshape(k_shape), x_shape), d_kernel


conv_chwn_unit.defvjp(conv_chwn_unit_fwd, conv_chwn_unit_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_pool(x, kernel, pool):
    """max over p x p windows of conv(x, kernel) through the hand-written CPU kernels (kernels/):
    (C, H, W, N), (KH, KW, C, O) -> (O, PH, PW, N); the same values as conv_chwn + max_pool."""
    return conv_pool_fwd(x, kernel, pool)[0]


def conv_pool_fwd(x, kernel, pool):
    xp = kernels.pad_batch(x)
    y, where = kernels.conv_pool_forward(xp, kernel, pool)
    return y[..., : x.shape[-1]], (xp, kernel, where)


def conv_pool_bwd(pool, residuals, dy):
    xp, kernel, where = residuals
    dyp = kernels.pad_batch(dy)
    d_kernel = kernels.conv_pool_kernel_grad(xp, kernel, dyp, where, pool)
    # The input's gradient: the pooled gradient put back at each window's maximum (zero in the
    # cropped margin), then the convolution's transpose.
    o, ph, pw, n = dyp.shape
    oh, ow = xp.shape[1] - kernel.shape[0] + 1, xp.shape[2] - kernel.shape[1] + 1
    spread = jnp.where(where[..., None] == jnp.arange(pool * pool, dtype=jnp.uint8), dyp[..., None], 0.0)
    spread = spread.reshape(o, ph, pw, n, pool, pool).transpose(0, 1, 4, 2, 5, 3).reshape(o, ph * pool, pw * pool, n)
    spread = jnp.pad(spread, ((0, 0), (0, oh - ph * pool), (0, ow - pw * pool), (0, 0)))
    return conv_chwn_transpose(spread, kernel, xp.shape)[..., : dy.shape[-1]], d_kernel


conv_pool.defvjp(conv_pool_fwd, conv_pool_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_direct(x, kernel, padding=((0, 0), (0, 0))):
    """A stride-1 convolution through the hand-written CPU kernels (kernels/conv.cc), with no patch
    matrix, of x padded by `padding` ((top, bottom), (left, right)) with zeros: (C, H, W, N),
    (KH, KW, C, O) -> (O, OH, OW, N); the same values as conv_chwn."""
    return conv_direct_fwd(x, kernel, padding)[0]


def conv_direct_fwd(x, kernel, padding):
    xp = kernels.pad_batch(pad_spatial(x, padding))
    return kernels.conv_forward(xp, kernel)[..., : x.shape[-1]], (xp, kernel)


def conv_direct_bwd(padding, residuals, dy):
    xp, kernel = residuals
    dyp = kernels.pad_batch(dy)
    (top, bottom), (left, right) = padding
    x_shape = (xp.shape[0], xp.shape[1] - top - bottom, xp.shape[2] - left - right, xp.shape[3])
    # (A first layer's input needs no gradient: XLA drops that call.)
    return (
        kernels.conv_input_grad(dyp, kernel, x_shape, top, left)[..., : dy.shape[-1]],
        kernels.conv_kernel_grad(xp, dyp, kernel.shape),
    )


conv_direct.defvjp(conv_direct_fwd, conv_direct_bwd)


def channels(v):
    """A per-channel vector shaped to broadcast over a (C, H, W, N) tensor."""
    return v.reshape(-1, 1, 1, 1)


def batch_norm_chwn_primal(x, weight, gamma, beta, epsilon, relu) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batch normalization in training of a (C, H, W, N) tensor over all axes but the channels', each
    sample weighted by `weight` (N,), then max(y, 0) where relu, with the moments through the
    hand-written CPU kernels (kernels/norm.cc): -> (y, mean, variance). The same values as
    layers.NormOp's XLA route; the moments are for the moving statistics, and no gradient flows
    back through them (their cotangents are dropped)."""
    return batch_norm_chwn_fwd(x, weight, gamma, beta, epsilon, relu)[0]


# (Wrapped here, not by a decorator, so that type checkers see what it returns.)
batch_norm_chwn = jax.custom_vjp(batch_norm_chwn_primal, nondiff_argnums=(4, 5))


def batch_norm_chwn_fwd(x, weight, gamma, beta, epsilon, relu):
    moments = kernels.norm_moments(x, weight)
    mean, variance = moments[:, 0], moments[:, 1]
    inv = lax.rsqrt(variance + epsilon)
    scale = inv * gamma
    shift = beta - mean * scale
    y = x * channels(scale) + channels(shift)
    return (jnp.maximum(y, 0.0) if relu else y, mean, variance), (x, weight, jnp.stack([scale, shift, mean, inv], 1))


def batch_norm_chwn_bwd(epsilon, relu, residuals, cotangents):
    x, weight, params = residuals
    dx, sums = kernels.norm_grad(cotangents[0], x, weight, params, relu)
    return dx, jnp.zeros_like(weight), sums[:, 1] * params[:, 3], sums[:, 0]


batch_norm_chwn.defvjp(batch_norm_chwn_fwd, batch_norm_chwn_bwd)


@jax.custom_vjp
def sparse_dense(x, w):
    """x @ w through the hand-written CPU kernels that skip x's zeros (kernels/): (N, K), (K, M) -> (N, M)."""
    return kernels.sparse_dense_forward(x, w)[0]


def sparse_dense_fwd(x, w):
    y, lists = kernels.sparse_dense_forward(x, w)
    return y, (lists, w)


def sparse_dense_bwd(residuals, dy):
    lists, w = residuals
    # The input's gradient is a plain product: a first layer's input needs none, and XLA drops it.
    return dy @ w.T, kernels.sparse_dense_kernel_grad(lists, dy, w.shape[0])


sparse_dense.defvjp(sparse_dense_fwd, sparse_dense_bwd)


def max_pool(x, pool, strides, spatial):
    """Max pooling ('valid') over the two axes `spatial` of x."""
    (ph, pw), (sh, sw) = pool, strides
    ah, aw = spatial
    if (ph, pw) == (sh, sw):
        return window_max(x, pool, spatial)
    window, stride = [1] * x.ndim, [1] * x.ndim
    window[ah], window[aw], stride[ah], stride[aw] = ph, pw, sh, sw
    return lax.reduce_window(x, -jnp.inf, lax.max, window, stride, "VALID")


def windows(x, pool, spatial):
    """x cropped to whole windows and reshaped so each window spans two axes, and those axes."""
    (ph, pw), (ah, aw) = pool, spatial
    oh, ow = x.shape[ah] // ph, x.shape[aw] // pw
    x = lax.slice_in_dim(lax.slice_in_dim(x, 0, oh * ph, axis=ah), 0, ow * pw, axis=aw)
    shape = list(x.shape)
    shape[aw : aw + 1] = [ow, pw]
    shape[ah : ah + 1] = [oh, ph]
    return x.reshape(shape), window_axes(spatial)


def window_axes(spatial):
    """Where the within-window axes sit after `windows` splits each spatial axis in two."""
    ah, aw = spatial
    return ah + 1, aw + 2


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def window_max(x, pool, spatial):
    """Max over non-overlapping windows: a reshape and a max, cheaper than reduce_window.

    Its gradient goes to the window's maximum through a mask saved in the
    forward pass; autodiff of the max would also count ties to share the
    gradient among them, a second pass over the input that cost more than the
    pooling itself. A tie (rare after a convolution) gives each tied input the
    whole gradient.
    """
    return window_max_fwd(x, pool, spatial)[0]


def window_max_fwd(x, pool, spatial):
    xw, axes = windows(x, pool, spatial)
    y = xw.max(axis=axes)
    return y, (xw == jnp.expand_dims(y, axes), x.shape)


def window_max_bwd(pool, spatial, residuals, dy):
    mask, shape = residuals
    axes = window_axes(spatial)
    dx = jnp.where(mask, jnp.expand_dims(dy, axes), jnp.zeros((), dy.dtype))
    cropped = list(shape)
    for a, p in zip(spatial, pool):
        cropped[a] = shape[a] // p * p
    dx = dx.reshape(cropped)
    return (jnp.pad(dx, [(0, full - part) for full, part in zip(shape, cropped)]),)


window_max.defvjp(window_max_fwd, window_max_bwd)


def keep_mask(key, keep, shape):
    """Bernoulli(keep) booleans from as few random bits as represent `keep` exactly (1 bit for 0.5).

    jax.random.bernoulli spends a whole 32-bit draw per element; on a CPU that
    costs more than the convolution it masks. Rates that are no multiple of
    1/65536 get 16 bits per element (an error below 2e-5 in the keep rate).
    """
    bits = mask_bits(keep)
    size = math.prod(shape)
    return (random_fields(key, size, bits)[:size] < round(keep * 2**bits)).reshape(shape)


def mask_bits(keep):
    """The random bits per element keep_mask draws for this keep rate: 1, 2, 4 or 8 where they
    represent it exactly, else 16."""
    return next((b for b in (1, 2, 4, 8) if (keep * 2**b).is_integer()), 16)


def random_fields(key, size, bits):
    """At least `size` random `bits`-bit integers, flat, packed 32 // bits to a 32-bit word. Word i
    does not depend on `size`, so the draw for a size is the head of the draw for a larger one, which
    dropout_input relies on.

    A counter hash, not jax.random.bits: with threefry's 20 rounds per pair of words a CNN step
    took 14% (batch 32) to 18% (batch 128) longer on a CPU (`bench/ab.py --compare rng`). Dropout
    needs fair, independent bits, not unpredictable ones: word i is two rounds of a 32-bit integer
    hash of i, keyed by the key's words (a fresh key per step and layer, from fold_in)."""
    per_word = 32 // bits
    seed = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    counter = jnp.arange(-(-size // per_word), dtype=jnp.uint32)
    words = hash32(hash32(counter + seed[0]) ^ seed[-1])
    return ((words[:, None] >> (jnp.arange(per_word, dtype=jnp.uint32) * bits)) & (2**bits - 1)).reshape(-1)


def hash32(v):
    """Chris Wellons' "lowbias32": a bijection of uint32 whose output bits each flip with probability
    ~1/2 when any input bit does (https://nullprogram.com/blog/2018/07/31/)."""
    v = (v ^ (v >> 16)) * jnp.uint32(0x7FEB352D)
    v = (v ^ (v >> 15)) * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)


def dropout(x, rate, key):
    keep = 1.0 - rate
    return lax.select(keep_mask(key, keep, x.shape), x / keep, jnp.zeros_like(x))


def dropout_input(x, keep, threshold, key, width=None):
    """dropout with the rate an input of the program: `keep` (float32) and `threshold`, its 16-bit
    compare value (a rate keep_mask would draw 16 bits for). `width`: x's true width where its last
    axis is padded (widths.py); the mask is then the unpadded (rows, width) mask, element for element."""
    size = math.prod(x.shape)
    fields = random_fields(key, size, 16)
    if width is None:
        drawn = fields[:size].reshape(x.shape)
    else:  # row i, column j of the unpadded layer is element i * width + j of its draw
        rows, columns = x.shape
        index = jnp.arange(rows)[:, None] * width + jnp.arange(columns)[None, :]
        drawn = fields[jnp.minimum(index, size - 1)]
    return lax.select(drawn < threshold.astype(jnp.uint32), x * (1.0 / keep), jnp.zeros_like(x))
