"""The Keras layers the fast path lowers: one typed op class per layer class, in one table.

Each op class says how a Keras layer becomes it (`from_layer`) and what it
computes (`apply`), and is registered by the Keras layer class it lowers
(`@lowers(keras.layers.Dense)`): LOWERED is the one table of what the fast
path implements, read both to build a model's ops and to refuse any other
layer (op_class_for), so adding a layer touches this module alone.

registry.py holds the table, the decorator and the checks every op shares
(refuse_extras: a layer whose extras the op does not compute is refused).

`from_layer(layer, walk)` returns (the op, or None where the layer computes
nothing in the lowered model; the layer's entry in the model's structural
signature); `walk` is the lowering in progress (lowering.Walk: the current
rank, the ops so far, where the layer's variables sit among the model's).
`apply(x, call)` takes the activations and the forward pass's other inputs
(lowering.Call: params, state, training, key, weight, layout).
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
from jax import lax

from mnistlab.training.fastpath import ops
from mnistlab.training.fastpath.layouts import SPATIAL_AXES
from mnistlab.training.fastpath.registry import ELEMENTWISE, MONOTONE, L, Op, activation_name, kernel_and_bias, lowers
from mnistlab.training.fastpath.unsupported import Unsupported


@lowers(L.Dense)
@dataclass(frozen=True)
class DenseOp(Op):
    weights: tuple  # positions in params: (kernel,) or (kernel, bias)
    activation: Callable
    sparse: bool = False  # through the sparse-input kernels (ops.sparse_dense)

    @classmethod
    def from_layer(cls, layer, walk):
        if walk.rank != 1:
            raise Unsupported(f"Dense layer {layer.name} on a rank-{walk.rank} input")
        return (
            cls(walk.weights(layer, kernel_and_bias(layer)), layer.activation),
            ("dense", layer.units, layer.use_bias, activation_name(layer)),
        )

    def apply(self, x, call):
        params = call.params
        x = ops.sparse_dense(x, params[self.weights[0]]) if self.sparse else x @ params[self.weights[0]]
        if len(self.weights) > 1:
            x = x + params[self.weights[1]]
        return self.activation(x)

    def on_kernels(self):
        return self.sparse


@lowers(L.Conv2D)
@dataclass(frozen=True)
class ConvOp(Op):
    weights: tuple
    activation: Callable
    strides: tuple
    padding: str  # "valid" or "same"
    # (pool size, pool strides) of a max pooling folded in before the bias and activation
    pool: tuple[tuple, tuple] | None = None
    route: str = "xla"  # "xla" (the layout's conv), "direct" (ops.conv_direct), "pooled" (ops.conv_pool)
    images = True

    @classmethod
    def from_layer(cls, layer, walk):
        cfg = layer.get_config()
        if (
            walk.rank != 3
            or cfg["data_format"] != "channels_last"
            or cfg["groups"] != 1
            or tuple(cfg["dilation_rate"]) != (1, 1)
            or cfg["padding"] not in ("valid", "same")
        ):
            raise Unsupported(
                f"Conv2D layer {layer.name}: only channels_last, groups 1, dilation 1, "
                "valid or same padding are lowered"
            )
        if activation_name(layer) not in ELEMENTWISE:
            raise Unsupported(f"Conv2D layer {layer.name}: activation {activation_name(layer)}")
        return (
            cls(walk.weights(layer, kernel_and_bias(layer)), layer.activation, tuple(cfg["strides"]), cfg["padding"]),
            (
                "conv",
                cfg["filters"],
                tuple(cfg["kernel_size"]),
                tuple(cfg["strides"]),
                cfg["padding"],
                layer.use_bias,
                activation_name(layer),
            ),
        )

    def fuse(self, following):
        """A max pooling right after: pool the convolution's raw output, then add the bias and
        activate. The same values, with the bias and activation (and their gradients) on a quarter
        of them. (A lowered convolution's activation has a name: it passed the ELEMENTWISE check.)"""
        if isinstance(following, PoolOp) and self.pool is None and self.activation.__name__ in MONOTONE:
            return replace(self, pool=(following.pool, following.strides))
        return None

    def apply(self, x, call):
        kernel = call.params[self.weights[0]]
        if self.route == "pooled":
            assert self.pool is not None  # routes.py chooses it only for a convolution with a pooling folded in
            x = ops.conv_pool(ops.pad_chwn(x, kernel.shape, self.strides, self.padding), kernel, self.pool[0][0])
        else:
            if self.route == "direct":
                x = ops.conv_direct(x, kernel, ops.spatial_padding(x.shape, kernel.shape, self.strides, self.padding))
            else:
                x = call.layout.conv(x, kernel, self.strides, self.padding)
            if self.pool:
                size, strides = self.pool
                x = ops.max_pool(x, size, strides, SPATIAL_AXES)
        if len(self.weights) > 1:
            x = x + call.params[self.weights[1]].reshape(call.layout.channel_shape)
        return self.activation(x)

    def on_kernels(self):
        return self.route != "xla"


@lowers(L.MaxPooling2D)
@dataclass(frozen=True)
class PoolOp(Op):
    pool: tuple
    strides: tuple
    images = True

    @classmethod
    def from_layer(cls, layer, walk):
        cfg = layer.get_config()
        if walk.rank != 3 or cfg["padding"] != "valid" or cfg["data_format"] != "channels_last":
            raise Unsupported(f"MaxPooling2D layer {layer.name}: only valid padding, channels_last")
        pool, strides = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
        return cls(pool, strides), ("pool", pool, strides)

    def apply(self, x, call):
        return ops.max_pool(x, self.pool, self.strides, SPATIAL_AXES)


@lowers(L.Dropout)
@dataclass(frozen=True)
class DropoutOp(Op):
    rate: float
    stream: int  # which dropout layer: each gets its own random stream
    runtime: bool = False  # the rate is an input of the program (widths.py), not this constant
    width: int = -1  # with runtime: which of the program's true widths the input has (-1: unpadded)

    @classmethod
    def from_layer(cls, layer, walk):
        if layer.noise_shape is not None:
            raise Unsupported(f"Dropout layer {layer.name} has a noise_shape")
        stream = sum(isinstance(op, DropoutOp) for op in walk.ops)
        return cls(float(layer.rate), stream), ("dropout", float(layer.rate))

    def apply(self, x, call):
        key = jax.random.fold_in(call.key, self.stream) if call.training else None
        if call.training and self.runtime:
            knobs = call.knobs
            width = knobs["width"][self.width] if self.width >= 0 else None
            x = ops.dropout_input(x, knobs["keep"][self.stream], knobs["threshold"][self.stream], key, width)
        elif call.training and self.rate > 0:
            x = ops.dropout(x, self.rate, key)
        return x


@lowers(L.Flatten)
@dataclass(frozen=True)
class FlattenOp(Op):
    @classmethod
    def from_layer(cls, layer, walk):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise Unsupported(f"Flatten layer {layer.name}: only channels_last")
        return (cls() if walk.rank == 3 else None), ("flatten",)

    def rank_after(self, rank):
        return 1

    def apply(self, x, call):
        # Keras flattens NHWC as (h, w, c): keep that order so Dense weights mean the same.
        x = call.layout.leave(x)
        return x.reshape(x.shape[0], -1)


@lowers(L.BatchNormalization)
@dataclass(frozen=True)
class NormOp(Op):
    """Batch normalization over every axis but the channels' (Keras' BatchNormalization, axis -1)."""

    weights: tuple  # positions in params of (gamma, beta); None where the layer has none
    state: tuple  # positions in the state of (moving mean, moving variance)
    momentum: float
    epsilon: float
    relu: bool = False  # a ReLU right after, folded in (its gradient's mask is then the kernels' too)
    on_images: bool = False  # over (height, width, channels) activations, not features
    route: str = "xla"  # "xla", or "kernels" (ops.batch_norm_chwn: training on chwn images)
    keeps_state = True

    @classmethod
    def from_layer(cls, layer, walk):
        cfg = layer.get_config()
        if cfg["axis"] not in (-1, walk.rank) or cfg.get("renorm") or cfg.get("synchronized") or not layer.trainable:
            raise Unsupported(
                f"BatchNormalization layer {layer.name}: only a trainable one over the "
                "last axis, without renorm or synchronization, is lowered"
            )
        gamma = walk.weights(layer, ["gamma"])[0] if cfg["scale"] else None
        beta = walk.weights(layer, ["beta"])[0] if cfg["center"] else None
        stats = walk.state(layer, ["moving_mean", "moving_variance"])
        return (
            cls((gamma, beta), stats, float(cfg["momentum"]), float(cfg["epsilon"]), on_images=walk.rank == 3),
            ("norm", float(cfg["momentum"]), float(cfg["epsilon"]), cfg["scale"], cfg["center"]),
        )

    def n_state(self):
        return len(self.state)

    def fuse(self, following):
        """A ReLU right after: max(y, 0) computed here, so the kernels' gradient masks it in the same pass."""
        if isinstance(following, ActivationOp) and following.activation.__name__ == "relu" and not self.relu:
            return replace(self, relu=True)
        return None

    def apply(self, x, call):
        """Batch normalization as Keras computes it; in training, the batch's moments (rows of
        weight 0, the padding of a short last batch, left out) and the moving statistics updated
        (call.state replaced)."""
        layout, weight = call.layout, call.weight
        gamma, beta = (call.params[i] if i is not None else None for i in self.weights)
        features = x.ndim == 2
        axes = (0,) if features else tuple(a for a in range(4) if a != layout.channel_axis)
        shape = (1, -1) if features else layout.channel_shape
        if call.training:
            w = jnp.ones(x.shape[0] if features else x.shape[layout.batch_axis], x.dtype) if weight is None else weight
            if self.route == "kernels":
                c = x.shape[layout.channel_axis]
                gamma = jnp.ones(c, x.dtype) if gamma is None else gamma
                beta = jnp.zeros(c, x.dtype) if beta is None else beta
                y, mean, variance = ops.batch_norm_chwn(x, w, gamma, beta, self.epsilon, self.relu)
                self.update(call, lax.stop_gradient(mean), lax.stop_gradient(variance))
                return y
            w = w.reshape((-1, 1) if features else layout.batch_shape)
            count = jnp.sum(w) * (1 if features else x.shape[1] * x.shape[2])  # H and W: axes 1, 2 in both layouts
            mean = jnp.sum(w * x, axes) / count
            variance = jnp.sum(w * jnp.square(x - mean.reshape(shape)), axes) / count
            self.update(call, mean, variance)
        else:
            mean, variance = call.state[self.state[0]], call.state[self.state[1]]
        inv = lax.rsqrt(variance + self.epsilon)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv if beta is None else beta - mean * inv
        y = x * inv.reshape(shape) + shift.reshape(shape)
        return jax.nn.relu(y) if self.relu else y

    def update(self, call, mean, variance):
        """The moving statistics moved toward the batch's moments (call.state replaced)."""
        state = list(call.state)
        m, v = self.state
        state[m] = state[m] * self.momentum + mean * (1.0 - self.momentum)
        state[v] = state[v] * self.momentum + variance * (1.0 - self.momentum)
        call.state = state

    def on_kernels(self):
        return self.route != "xla"


@lowers(L.Activation)
@dataclass(frozen=True)
class ActivationOp(Op):
    activation: Callable

    @classmethod
    def from_layer(cls, layer, walk):
        if activation_name(layer) not in ELEMENTWISE:
            raise Unsupported(f"Activation layer {layer.name}: activation {activation_name(layer)}")
        return cls(layer.activation), ("activation", activation_name(layer))

    def apply(self, x, call):
        return self.activation(x)


@lowers(L.ReLU)
class ReluOp(ActivationOp):
    """Keras' ReLU layer: an ActivationOp of jax.nn.relu, built from the layer's own settings."""

    @classmethod
    def from_layer(cls, layer, walk):
        cfg = layer.get_config()
        if cfg["max_value"] is not None or cfg["negative_slope"] or cfg["threshold"]:
            raise Unsupported(f"ReLU layer {layer.name}: only the plain max(x, 0) is lowered")
        return cls(jax.nn.relu), ("activation", "relu")
