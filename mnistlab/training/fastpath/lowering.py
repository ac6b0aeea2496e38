"""A Keras Sequential model as a pure JAX function of its weights.

The compiled epoch loop (engine.py) needs the model's forward pass as a plain
function `forward(params, x, training, key, state, weight) -> (probabilities,
new state)`, where `params` is the list of the model's trainable variables'
values in Keras' order and `state` its non-trainable ones' (batch
normalization's moving statistics), so the trained values go straight back
into the Keras model. Keras' own call cannot serve: it would pay for its
layers' bookkeeping inside every step, and its convolutions are XLA's, which
the CPU runs slowly for these small filters.

A layer becomes one typed op (DenseOp, ConvOp, PoolOp, DropoutOp, FlattenOp,
NormOp, ActivationOp) only when it is exactly that Keras class with nothing the
op does not do (regularizers, constraints, LoRA, quantization, other dtypes,
frozen weights): anything else raises Unsupported, so Keras trains it instead.

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
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
from jax import lax

from mnistlab.training.fastpath import ops
from mnistlab.training.fastpath.kernels import build, ffi
from mnistlab.training.fastpath.unsupported import Unsupported

LAYOUTS = ("nhwc", "chwn")

# Elementwise activations commute with any layout; softmax and friends do not.
ELEMENTWISE = {"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish",
               "softplus", "softsign", "leaky_relu", "hard_sigmoid", "hard_silu", "mish", "exponential"}
# Non-decreasing ones also commute with a max: pool(act(x + b)) == act(pool(x) + b), exactly.
MONOTONE = {"linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign",
            "leaky_relu", "hard_sigmoid", "exponential"}


@dataclass(frozen=True)
class DenseOp:
    weights: tuple            # positions in params: (kernel,) or (kernel, bias)
    activation: object
    sparse: bool = False      # through the sparse-input kernels (ops.sparse_dense)


@dataclass(frozen=True)
class ConvOp:
    weights: tuple
    activation: object
    strides: tuple
    padding: str              # "valid" or "same"
    pool: tuple = None        # (pool size, pool strides) of a max pooling folded in before bias and activation
    route: str = "xla"        # "xla" (conv_nhwc / conv_chwn), "direct" (ops.conv_direct), "pooled" (ops.conv_pool)


@dataclass(frozen=True)
class PoolOp:
    pool: tuple
    strides: tuple


@dataclass(frozen=True)
class DropoutOp:
    rate: float
    stream: int               # which dropout layer: each gets its own random stream


@dataclass(frozen=True)
class FlattenOp:
    pass


@dataclass(frozen=True)
class NormOp:
    """Batch normalization over every axis but the channels' (Keras' BatchNormalization, axis -1)."""
    weights: tuple            # positions in params of (gamma, beta); None where the layer has none
    state: tuple              # positions in the state of (moving mean, moving variance)
    momentum: float
    epsilon: float


@dataclass(frozen=True)
class ActivationOp:
    activation: object


@dataclass(frozen=True)
class Lowered:
    """A model's forward pass as a pure function, and the key that identifies its structure."""
    forward: callable        # (params, x, training, key, state, weight) -> ((batch, classes) output, new state)
    signature: tuple         # hashable: equal signatures give interchangeable `apply`s
    layout: str
    n_dropout: int           # dropout layers: each gets its own random stream
    images: bool             # holds convolutions or pooling (large activations per sample)
    kernels: bool = False    # runs some layers through the hand-written CPU kernels
    ops: tuple = ()
    n_state: int = 0         # non-trainable variables the ops read and update

    def apply(self, params, x, training=False, key=None, state=()):
        """The output alone."""
        return self.forward(params, x, training, key, state)[0]


def activation_name(layer):
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None)


def refuse_extras(layer, state=False):
    """Unsupported when the layer carries anything its op would silently drop. state: the op
    carries the layer's non-trainable weights."""
    for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                 "bias_constraint", "gamma_regularizer", "beta_regularizer", "gamma_constraint",
                 "beta_constraint"):
        if getattr(layer, name, None) is not None:
            raise Unsupported(f"layer {layer.name} has a {name.replace('_', ' ')}")
    if getattr(layer, "lora_enabled", False):
        raise Unsupported(f"layer {layer.name} has LoRA weights")
    if getattr(layer, "quantization_mode", None) is not None:
        raise Unsupported(f"layer {layer.name} is quantized")
    policy = getattr(layer, "dtype_policy", None)
    if policy is not None and (policy.compute_dtype != "float32" or policy.variable_dtype != "float32"):
        raise Unsupported(f"layer {layer.name} computes in {policy.name}, not float32")
    if layer.non_trainable_weights and not state:
        raise Unsupported(f"layer {layer.name} has non-trainable weights")


def _kernels_run_here(group):
    """Can the compiled program being built call `group`'s kernels, and do they pay off? (CPU only, a
    CPU they beat XLA on, and their library loaded.)"""
    return jax.default_backend() == "cpu" and build.pays_off(group) and build.load(group) is None


def _conv_runs_on_kernels(kernel_shape):
    """Are kernels built for a stride-1 convolution with this kernel (conv.cc)?"""
    return tuple(kernel_shape[:2]) in ffi.KERNEL_SIZES and _kernels_run_here("conv")


def _conv_pool_runs_on_kernels(kernel_shape, pool, strides):
    """...and for this pooling after it, in the same call (conv_pool.cc)?"""
    pooled = pool == strides and pool[0] == pool[1] and 1 <= pool[0] <= ffi.MAX_POOL
    return tuple(kernel_shape[:2]) in ffi.KERNEL_SIZES and pooled and _kernels_run_here("conv")


def layer_ops(model):
    """The model's layers as typed ops, and its structural signature; Unsupported for anything else."""
    import keras

    L = keras.layers
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    state_position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    input_shape = tuple(model.input_shape[1:])
    rank = len(input_shape)
    if rank not in (1, 3):
        raise Unsupported(f"input shape {input_shape}: expected (features,) or (height, width, channels)")
    ops_, signature, n_dropout = [], [("input", input_shape)], 0

    def weights(layer, names):
        try:
            return tuple(position[id(getattr(layer, name))] for name in names)
        except KeyError:
            raise Unsupported(f"layer {layer.name} has frozen or shared weights") from None

    for layer in model.layers:
        kind = type(layer)  # exactly: a subclass may compute something else
        if kind not in (L.Dense, L.Conv2D, L.MaxPooling2D, L.Dropout, L.Flatten, L.BatchNormalization,
                        L.ReLU, L.Activation):
            raise Unsupported(f"layer {layer.name} ({kind.__name__}) is not lowered")
        refuse_extras(layer, state=kind is L.BatchNormalization)
        if kind is L.Dense:
            if rank != 1:
                raise Unsupported(f"Dense layer {layer.name} on a rank-{rank} input")
            ops_.append(DenseOp(weights(layer, ["kernel", "bias"] if layer.use_bias else ["kernel"]),
                                layer.activation))
            signature.append(("dense", layer.units, layer.use_bias, activation_name(layer)))
        elif kind is L.Conv2D:
            cfg = layer.get_config()
            if rank != 3 or cfg["data_format"] != "channels_last" or cfg["groups"] != 1 \
                    or tuple(cfg["dilation_rate"]) != (1, 1) or cfg["padding"] not in ("valid", "same"):
                raise Unsupported(f"Conv2D layer {layer.name}: only channels_last, groups 1, dilation 1, "
                                  "valid or same padding are lowered")
            if activation_name(layer) not in ELEMENTWISE:
                raise Unsupported(f"Conv2D layer {layer.name}: activation {activation_name(layer)}")
            ops_.append(ConvOp(weights(layer, ["kernel", "bias"] if layer.use_bias else ["kernel"]),
                               layer.activation, tuple(cfg["strides"]), cfg["padding"]))
            signature.append(("conv", cfg["filters"], tuple(cfg["kernel_size"]), tuple(cfg["strides"]),
                              cfg["padding"], layer.use_bias, activation_name(layer)))
        elif kind is L.MaxPooling2D:
            cfg = layer.get_config()
            if rank != 3 or cfg["padding"] != "valid" or cfg["data_format"] != "channels_last":
                raise Unsupported(f"MaxPooling2D layer {layer.name}: only valid padding, channels_last")
            pool, strides = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
            previous = ops_[-1] if ops_ else None
            # (a lowered convolution's activation has a name: it passed the ELEMENTWISE check)
            if isinstance(previous, ConvOp) and previous.pool is None and previous.activation.__name__ in MONOTONE:
                # Pool the convolution's raw output, then add the bias and activate: the same
                # values, with the bias and activation (and their gradients) on a quarter of them.
                ops_[-1] = replace(previous, pool=(pool, strides))
            else:
                ops_.append(PoolOp(pool, strides))
            signature.append(("pool", pool, strides))
        elif kind is L.Dropout:
            if layer.noise_shape is not None:
                raise Unsupported(f"Dropout layer {layer.name} has a noise_shape")
            ops_.append(DropoutOp(float(layer.rate), n_dropout))
            signature.append(("dropout", float(layer.rate)))
            n_dropout += 1
        elif kind is L.Flatten:
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                raise Unsupported(f"Flatten layer {layer.name}: only channels_last")
            if rank == 3:
                ops_.append(FlattenOp())
            rank = 1
            signature.append(("flatten",))
        elif kind is L.BatchNormalization:
            cfg = layer.get_config()
            if cfg["axis"] not in (-1, rank) or cfg.get("renorm") or cfg.get("synchronized") \
                    or not layer.trainable:
                raise Unsupported(f"BatchNormalization layer {layer.name}: only a trainable one over the "
                                  "last axis, without renorm or synchronization, is lowered")
            gamma = weights(layer, ["gamma"])[0] if cfg["scale"] else None
            beta = weights(layer, ["beta"])[0] if cfg["center"] else None
            try:
                stats = (state_position[id(layer.moving_mean)], state_position[id(layer.moving_variance)])
            except KeyError:
                raise Unsupported(f"layer {layer.name} has shared moving statistics") from None
            ops_.append(NormOp((gamma, beta), stats, float(cfg["momentum"]), float(cfg["epsilon"])))
            signature.append(("norm", float(cfg["momentum"]), float(cfg["epsilon"]), cfg["scale"], cfg["center"]))
        elif kind is L.ReLU:
            cfg = layer.get_config()
            if cfg["max_value"] is not None or cfg["negative_slope"] or cfg["threshold"]:
                raise Unsupported(f"ReLU layer {layer.name}: only the plain max(x, 0) is lowered")
            ops_.append(ActivationOp(jax.nn.relu))
            signature.append(("activation", "relu"))
        elif kind is L.Activation:
            if activation_name(layer) not in ELEMENTWISE:
                raise Unsupported(f"Activation layer {layer.name}: activation {activation_name(layer)}")
            ops_.append(ActivationOp(layer.activation))
            signature.append(("activation", activation_name(layer)))
    return ops_, signature, n_dropout


def choose_kernels(ops_, variables, layout, use_kernels):
    """The ops with their routes to the hand-written CPU kernels set, where those are built.

    Stride-1 convolutions go to the kernels in the chwn layout: with the pooling that follows
    them where conv_pool computes it, on their own otherwise. A Dense layer on the model's
    input (flattened or not) sees the raw input: for pixels, mostly zeros, which its kernels skip.
    """
    ops_ = list(ops_)
    for i, op in enumerate(ops_):
        if use_kernels and layout == "chwn" and isinstance(op, ConvOp) and op.strides == (1, 1):
            shape = tuple(variables[op.weights[0]].shape)
            if _conv_runs_on_kernels(shape):
                pooled = op.pool and _conv_pool_runs_on_kernels(shape, *op.pool)
                ops_[i] = replace(op, route="pooled" if pooled else "direct")
    first = next((i for i, op in enumerate(ops_) if not isinstance(op, FlattenOp)), None)
    if use_kernels and first is not None and isinstance(ops_[first], DenseOp) and _kernels_run_here("dense"):
        ops_[first] = replace(ops_[first], sparse=True)
    return tuple(ops_)


def lower(model, layout="nhwc", use_kernels=True):
    """A Lowered for a built keras.Sequential, or Unsupported saying why not.

    use_kernels=False keeps every layer on XLA's route even where the
    hand-written kernels are built (for comparisons)."""
    import keras

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if type(model) is not keras.Sequential:
        raise Unsupported(f"{type(model).__name__} is not a keras.Sequential")
    if not model.built:
        raise Unsupported("the model is not built")
    ops_, signature, n_dropout = layer_ops(model)
    ops_ = choose_kernels(ops_, model.trainable_variables, layout, use_kernels)

    spatial_axes = (1, 2)  # H and W sit at axes 1 and 2 in both layouts
    to_layout = {"nhwc": lambda x: x, "chwn": lambda x: jnp.transpose(x, (3, 1, 2, 0))}[layout]
    from_layout = {"nhwc": lambda x: x, "chwn": lambda x: jnp.transpose(x, (3, 1, 2, 0))}[layout]
    conv = {"nhwc": ops.conv_nhwc, "chwn": ops.conv_chwn}[layout]
    channel_shape = {"nhwc": (1, 1, 1, -1), "chwn": (-1, 1, 1, 1)}[layout]
    channel_axis, batch_axis = {"nhwc": (3, 0), "chwn": (0, 3)}[layout]
    batch_shape = {"nhwc": (-1, 1, 1, 1), "chwn": (1, 1, 1, -1)}[layout]

    def normalize(op, x, params, state, training, weight):
        """Batch normalization as Keras computes it; in training, the batch's moments (rows of
        weight 0, the padding of a short last batch, left out) and the moving statistics updated."""
        gamma, beta = (params[i] if i is not None else None for i in op.weights)
        features = x.ndim == 2
        axes = (0,) if features else tuple(a for a in range(4) if a != channel_axis)
        shape = (1, -1) if features else channel_shape
        if training:
            w = jnp.ones(x.shape[0] if features else x.shape[batch_axis], x.dtype) if weight is None else weight
            w = w.reshape((-1, 1) if features else batch_shape)
            count = jnp.sum(w) * (1 if features else x.shape[1] * x.shape[2])  # H and W: axes 1, 2 in both layouts
            mean = jnp.sum(w * x, axes) / count
            variance = jnp.sum(w * jnp.square(x - mean.reshape(shape)), axes) / count
            state = list(state)
            m, v = op.state
            state[m] = state[m] * op.momentum + mean * (1.0 - op.momentum)
            state[v] = state[v] * op.momentum + variance * (1.0 - op.momentum)
        else:
            mean, variance = state[op.state[0]], state[op.state[1]]
        inv = lax.rsqrt(variance + op.epsilon)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv if beta is None else beta - mean * inv
        return x * inv.reshape(shape) + shift.reshape(shape), state

    def forward(params, x, training=False, key=None, state=(), weight=None):
        if x.ndim == 4:
            x = to_layout(x)
        for op in ops_:
            if isinstance(op, DenseOp):
                x = ops.sparse_dense(x, params[op.weights[0]]) if op.sparse else x @ params[op.weights[0]]
                if len(op.weights) > 1:
                    x = x + params[op.weights[1]]
                x = op.activation(x)
            elif isinstance(op, ConvOp):
                kernel = params[op.weights[0]]
                if op.route == "pooled":
                    x = ops.conv_pool(ops.pad_chwn(x, kernel.shape, op.strides, op.padding), kernel, op.pool[0][0])
                else:
                    if op.route == "direct":
                        x = ops.conv_direct(ops.pad_chwn(x, kernel.shape, op.strides, op.padding), kernel)
                    else:
                        x = conv(x, kernel, op.strides, op.padding)
                    if op.pool:
                        x = ops.max_pool(x, *op.pool, spatial_axes)
                if len(op.weights) > 1:
                    x = x + params[op.weights[1]].reshape(channel_shape)
                x = op.activation(x)
            elif isinstance(op, PoolOp):
                x = ops.max_pool(x, op.pool, op.strides, spatial_axes)
            elif isinstance(op, DropoutOp):
                if training and op.rate > 0:
                    x = ops.dropout(x, op.rate, jax.random.fold_in(key, op.stream))
            elif isinstance(op, FlattenOp):
                # Keras flattens NHWC as (h, w, c): keep that order so Dense weights mean the same.
                x = from_layout(x)
                x = x.reshape(x.shape[0], -1)
            elif isinstance(op, NormOp):
                x, state = normalize(op, x, params, state, training, weight)
            elif isinstance(op, ActivationOp):
                x = op.activation(x)
        return x, state

    has_images = any(isinstance(op, (ConvOp, PoolOp)) for op in ops_)
    uses_kernels = any(getattr(op, "sparse", False) or getattr(op, "route", "xla") != "xla" for op in ops_)
    n_state = sum(len(op.state) for op in ops_ if isinstance(op, NormOp))
    return Lowered(forward, tuple(signature) + ((layout, uses_kernels) if has_images else (uses_kernels,)),
                   layout if has_images else "nhwc", n_dropout, has_images, uses_kernels, ops_, n_state)
