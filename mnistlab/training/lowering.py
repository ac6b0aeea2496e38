"""Lowering a Keras Sequential model to a pure JAX function of its weights.

The fast training path (fast.py) runs whole epochs as compiled XLA programs;
for that it needs the model's forward pass as a plain function
`apply(params, x, training, key) -> probabilities`, where `params` is the
list of the model's trainable variables' values in Keras' order, so the
trained values go straight back into the Keras model.

Only the layers the notebook's models use are lowered (Dense, Conv2D,
MaxPooling2D, Dropout, Flatten); `lowerable(model)` says why a model is not.

Image tensors can flow in one of two layouts, because the fastest convolution
differs per device:
  "nhwc": Keras' own layout, convolutions through XLA's convolution op
          (cuDNN on a GPU);
  "chwn": channels, height, width, batch: each convolution is ONE matrix
          product over an im2col patch matrix whose long axis is the batch,
          which XLA's CPU backend runs many times faster than its own
          convolutions for these small filter counts (BENCHMARKS.md). A
          convolution followed by max pooling (the notebook CNN's first layer)
          goes to hand-written CPU kernels instead where they are built
          (kernels/: the same function, 1.6x faster CNN steps), and so does
          any other stride-1 convolution, with no patch matrix.
Dense layers always see (batch, features) in Keras' feature order, so the
Keras weights mean the same thing in both layouts. A Dense layer that takes the
model's input (pixels, mostly zeros) goes to hand-written CPU kernels that skip
the zeros, where they are built (the same function, computed in another order).
"""
import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from mnistlab.training import kernels

LAYOUTS = ("nhwc", "chwn")

# Elementwise activations commute with any layout; softmax and friends do not.
ELEMENTWISE = {"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish",
               "softplus", "softsign", "leaky_relu", "hard_sigmoid", "hard_silu", "mish", "exponential"}
# Non-decreasing ones also commute with a max: pool(act(x + b)) == act(pool(x) + b), exactly.
MONOTONE = {"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign",
            "leaky_relu", "hard_sigmoid", "exponential"}


class NotLowerable(Exception):
    """The model holds something the lowering does not handle; the message says what."""


@dataclass(frozen=True)
class Lowered:
    """A model's forward pass as a pure function, and the key that identifies its structure."""
    apply: callable          # (params, x, training, key) -> (batch, classes) output
    signature: tuple         # hashable: equal signatures give interchangeable `apply`s
    layout: str
    n_dropout: int           # dropout layers: each gets its own random stream
    images: bool             # holds convolutions or pooling (large activations per sample)
    kernels: bool = False    # runs some layers through the hand-written CPU kernels


def activation_name(layer):
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None)


def check_float32(layer):
    policy = getattr(layer, "dtype_policy", None)
    if policy is not None and (policy.compute_dtype != "float32" or policy.variable_dtype != "float32"):
        raise NotLowerable(f"layer {layer.name} computes in {policy.name}, not float32")


def conv_nhwc(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding.upper(),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def same_padding(size, k, s):
    """(before, after) padding of Keras' 'same' for one spatial axis."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pad_chwn(x, kernel_shape, strides, padding):
    """A (C, H, W, N) tensor padded as Keras' padding mode says, for a 'valid' convolution."""
    if padding != "same":
        return x
    (kh, kw), (sh, sw) = kernel_shape[:2], strides
    return jnp.pad(x, ((0, 0), same_padding(x.shape[1], kh, sh), same_padding(x.shape[2], kw, sw), (0, 0)))


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
    patches = jnp.stack([x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
                         for i in range(kh) for j in range(kw)])
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
        patches = lax.dynamic_update_slice(patches, x[None, :, i:i + oh, j:j + ow, :], (k, 0, 0, 0, 0))
    return patches


def col2im(patches, shape):
    """The transpose of im2col: each patch added back where it came from."""
    kk, c, oh, ow, n = patches.shape
    kh, kw = shape[1] - oh + 1, shape[2] - ow + 1
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
    y, where = kernels.forward(xp, kernel, pool)
    return y[..., :x.shape[-1]], (xp, kernel, where)


def conv_pool_bwd(pool, residuals, dy):
    xp, kernel, where = residuals
    dyp = kernels.pad_batch(dy)
    d_kernel = kernels.kernel_grad(xp, kernel, dyp, where, pool)
    # The input's gradient: the pooled gradient put back at each window's maximum (zero in the
    # cropped margin), then the convolution's transpose.
    o, ph, pw, n = dyp.shape
    oh, ow = xp.shape[1] - kernel.shape[0] + 1, xp.shape[2] - kernel.shape[1] + 1
    spread = jnp.where(where[..., None] == jnp.arange(pool * pool, dtype=jnp.uint8), dyp[..., None], 0.0)
    spread = spread.reshape(o, ph, pw, n, pool, pool).transpose(0, 1, 4, 2, 5, 3).reshape(o, ph * pool, pw * pool, n)
    spread = jnp.pad(spread, ((0, 0), (0, oh - ph * pool), (0, ow - pw * pool), (0, 0)))
    return conv_chwn_transpose(spread, kernel, xp.shape)[..., :dy.shape[-1]], d_kernel


conv_pool.defvjp(conv_pool_fwd, conv_pool_bwd)


@jax.custom_vjp
def conv_direct(x, kernel):
    """A stride-1 'valid' convolution through the hand-written CPU kernels (kernels/conv.cc), with no
    patch matrix: (C, H, W, N), (KH, KW, C, O) -> (O, OH, OW, N); the same values as conv_chwn."""
    return conv_direct_fwd(x, kernel)[0]


def conv_direct_fwd(x, kernel):
    xp = kernels.pad_batch(x)
    return kernels.conv_forward(xp, kernel)[..., :x.shape[-1]], (xp, kernel)


def conv_direct_bwd(residuals, dy):
    xp, kernel = residuals
    dyp = kernels.pad_batch(dy)
    # (A first layer's input needs no gradient: XLA drops that call.)
    return (kernels.conv_input_grad(dyp, kernel, xp.shape)[..., :dy.shape[-1]],
            kernels.conv_kernel_grad(xp, dyp, kernel.shape))


conv_direct.defvjp(conv_direct_fwd, conv_direct_bwd)


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
    shape[aw:aw + 1] = [ow, pw]
    shape[ah:ah + 1] = [oh, ph]
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
    bits = next((b for b in (1, 2, 4, 8) if (keep * 2 ** b).is_integer()), 16)
    size = math.prod(shape)
    per_word = 32 // bits
    words = jax.random.bits(key, (-(-size // per_word),), jnp.uint32)
    fields = (words[:, None] >> (jnp.arange(per_word, dtype=jnp.uint32) * bits)) & (2 ** bits - 1)
    return (fields.reshape(-1)[:size] < round(keep * 2 ** bits)).reshape(shape)


def dropout(x, rate, key):
    keep = 1.0 - rate
    return lax.select(keep_mask(key, keep, x.shape), x / keep, jnp.zeros_like(x))


def lower(model, layout="nhwc", use_kernels=True):
    """A Lowered for a built keras.Sequential, or NotLowerable saying why not.

    use_kernels=False keeps every convolution on XLA's route even where the
    hand-written kernels are built (for comparisons)."""
    import keras

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if not isinstance(model, keras.Sequential):
        raise NotLowerable(f"{type(model).__name__} is not a keras.Sequential")
    if not model.built:
        raise NotLowerable("the model is not built")
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    input_shape = tuple(model.input_shape[1:])
    rank = len(input_shape)
    if rank not in (1, 3):
        raise NotLowerable(f"input shape {input_shape}: expected (features,) or (height, width, channels)")
    ops, signature, n_dropout = [], [("input", input_shape)], 0

    def weights(layer, names):
        try:
            return [position[id(getattr(layer, name))] for name in names]
        except KeyError:
            raise NotLowerable(f"layer {layer.name} has frozen or shared weights") from None

    for layer in model.layers:
        kind = type(layer).__name__
        check_float32(layer)
        if kind == "Dense":
            if rank != 1:
                raise NotLowerable(f"Dense layer {layer.name} on a rank-{rank} input")
            act = layer.activation
            idx = weights(layer, ["kernel", "bias"] if layer.use_bias else ["kernel"])
            ops.append(("dense", idx, act))
            signature.append(("dense", layer.units, layer.use_bias, activation_name(layer)))
        elif kind == "Conv2D":
            cfg = layer.get_config()
            if rank != 3 or cfg["data_format"] != "channels_last" or cfg["groups"] != 1 \
                    or tuple(cfg["dilation_rate"]) != (1, 1) or cfg["padding"] not in ("valid", "same"):
                raise NotLowerable(f"Conv2D layer {layer.name}: only channels_last, groups 1, dilation 1, "
                                   "valid or same padding are lowered")
            if activation_name(layer) not in ELEMENTWISE:
                raise NotLowerable(f"Conv2D layer {layer.name}: activation {activation_name(layer)}")
            idx = weights(layer, ["kernel", "bias"] if layer.use_bias else ["kernel"])
            ops.append(("conv", idx, layer.activation, tuple(cfg["strides"]), cfg["padding"], None))
            signature.append(("conv", cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]),
                              cfg["padding"], layer.use_bias, activation_name(layer)))
        elif kind == "MaxPooling2D":
            cfg = layer.get_config()
            if rank != 3 or cfg["padding"] != "valid" or cfg["data_format"] != "channels_last":
                raise NotLowerable(f"MaxPooling2D layer {layer.name}: only valid padding, channels_last")
            pool, strides = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
            previous = ops[-1] if ops else ("",)
            # (a lowered convolution's activation has a name: it passed the ELEMENTWISE check)
            if previous[0] == "conv" and previous[5] is None and previous[2].__name__ in MONOTONE:
                # Pool the convolution's raw output, then add the bias and activate: the same
                # values, with the bias and activation (and their gradients) on a quarter of them.
                ops[-1] = previous[:5] + ((pool, strides),)
            else:
                ops.append(("pool", pool, strides))
            signature.append(("pool", pool, strides))
        elif kind == "Dropout":
            if layer.noise_shape is not None:
                raise NotLowerable(f"Dropout layer {layer.name} has a noise_shape")
            ops.append(("dropout", float(layer.rate), n_dropout))
            signature.append(("dropout", float(layer.rate)))
            n_dropout += 1
        elif kind == "Flatten":
            if rank == 3:
                ops.append(("flatten",))
            rank = 1
            signature.append(("flatten",))
        else:
            raise NotLowerable(f"layer {layer.name} ({kind}) is not lowered")

    spatial_axes = (1, 2)  # H and W sit at axes 1 and 2 in both layouts
    to_layout = {"nhwc": lambda x: x, "chwn": lambda x: jnp.transpose(x, (3, 1, 2, 0))}[layout]
    from_layout = {"nhwc": lambda x: x, "chwn": lambda x: jnp.transpose(x, (3, 1, 2, 0))}[layout]
    conv = {"nhwc": conv_nhwc, "chwn": conv_chwn}[layout]
    channel_shape = {"nhwc": (1, 1, 1, -1), "chwn": (-1, 1, 1, 1)}[layout]
    # Stride-1 convolutions go to the hand-written CPU kernels where they are built: with the pooling
    # that follows them where conv_pool computes it (pooled_ops), on their own otherwise.
    variables = model.trainable_variables
    kernel_ops = {i for i, op in enumerate(ops) if use_kernels and layout == "chwn" and op[0] == "conv"
                  and op[3] == (1, 1) and kernels.supports(tuple(variables[op[1][0]].shape))}
    pooled_ops = {i for i in kernel_ops if ops[i][5] and kernels.supports(tuple(variables[ops[i][1][0]].shape),
                                                                          *ops[i][5])}
    # A Dense layer on the model's input (flattened or not) sees the raw input: for pixels, mostly
    # zeros, which its kernels skip.
    first = next((i for i, op in enumerate(ops) if op[0] != "flatten"), None)
    if use_kernels and first is not None and ops[first][0] == "dense" and kernels.usable():
        kernel_ops.add(first)

    def apply(params, x, training=False, key=None):
        if x.ndim == 4:
            x = to_layout(x)
        for i, op in enumerate(ops):
            name = op[0]
            if name == "dense":
                _, idx, act = op
                x = sparse_dense(x, params[idx[0]]) if i in kernel_ops else x @ params[idx[0]]
                if len(idx) > 1:
                    x = x + params[idx[1]]
                x = act(x)
            elif name == "conv":
                _, idx, act, strides, padding, pool = op
                kernel = params[idx[0]]
                if i in pooled_ops:
                    x = conv_pool(pad_chwn(x, kernel.shape, strides, padding), kernel, pool[0][0])
                else:
                    if i in kernel_ops:
                        x = conv_direct(pad_chwn(x, kernel.shape, strides, padding), kernel)
                    else:
                        x = conv(x, kernel, strides, padding)
                    if pool:
                        x = max_pool(x, *pool, spatial_axes)
                if len(idx) > 1:
                    x = x + params[idx[1]].reshape(channel_shape)
                x = act(x)
            elif name == "pool":
                x = max_pool(x, op[1], op[2], spatial_axes)
            elif name == "dropout":
                if training and op[1] > 0:
                    x = dropout(x, op[1], jax.random.fold_in(key, op[2]))
            elif name == "flatten":
                # Keras flattens NHWC as (h, w, c): keep that order so Dense weights mean the same.
                x = from_layout(x)
                x = x.reshape(x.shape[0], -1)
        return x

    has_images = any(op[0] in ("conv", "pool") for op in ops)
    return Lowered(apply, tuple(signature) + ((layout, bool(kernel_ops)) if has_images else (bool(kernel_ops),)),
                   layout if has_images else "nhwc", n_dropout, has_images, bool(kernel_ops))


def lowerable(model):
    """None when `model` can be lowered, else the reason it cannot."""
    try:
        lower(model)
    except NotLowerable as e:
        return str(e)
    return None
