"""The one table of what the fast path lowers (LOWERED: Keras layer class -> op class, filled by
@lowers in layers.py, where the op classes live), the checks every op shares, and the ops' base class.

A layer becomes its op only when it is exactly the registered class (a
subclass may compute something else) with nothing the op does not do
(regularizers, constraints, LoRA, quantization, other dtypes, frozen weights:
refuse_extras): anything else raises Unsupported, so Keras trains it instead.
"""

import keras

from mnistlab.training.fastpath.unsupported import Unsupported

L = keras.layers
LOWERED = {}  # Keras layer class -> the op class that lowers it

# Elementwise activations commute with any layout; softmax and friends do not.
ELEMENTWISE = {
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "softplus",
    "softsign",
    "leaky_relu",
    "hard_sigmoid",
    "hard_silu",
    "mish",
    "exponential",
}
# Non-decreasing ones also commute with a max: pool(act(x + b)) == act(pool(x) + b), exactly.
MONOTONE = {
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "leaky_relu",
    "hard_sigmoid",
    "exponential",
}


def lowers(layer_class):
    """Register the decorated op class as the lowering of exactly `layer_class`."""

    def register(op_class):
        LOWERED[layer_class] = op_class
        return op_class

    return register


def op_class_for(layer):
    """The op class registered for this very layer class; Unsupported, naming the layer, for any other."""
    found = LOWERED.get(type(layer))  # exactly: a subclass may compute something else
    if found is None:
        raise Unsupported(f"layer {layer.name} ({type(layer).__name__}) is not lowered")
    return found


def refuse_extras(layer, state=False):
    """Unsupported when the layer carries anything its op would silently drop. state: the op
    carries the layer's non-trainable weights."""
    for name in (
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
        "gamma_regularizer",
        "beta_regularizer",
        "gamma_constraint",
        "beta_constraint",
    ):
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


def activation_name(layer):
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None)


def kernel_and_bias(layer):
    return ("kernel", "bias") if layer.use_bias else ("kernel",)


class Op:
    """What every op answers besides from_layer and apply; the defaults suit most."""

    keeps_state = False  # carries its layer's non-trainable weights (refuse_extras lets them through)
    images = False  # works on image tensors (large activations per sample)

    def rank_after(self, rank):
        """The rank of what the op hands on, given the rank it takes (1: features, 3: images)."""
        return rank

    def fuse(self, following):
        """This op and the `following` one computed as one op, or None where they stay two."""
        return None

    def on_kernels(self):
        """Does the op run through the hand-written CPU kernels?"""
        return False

    def n_state(self):
        """How many of the model's non-trainable variables the op reads and updates."""
        return 0
