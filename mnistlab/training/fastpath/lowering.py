"""A Keras Sequential model as a pure JAX function of its weights.

The compiled epoch loop (engine.py) needs the model's forward pass as a plain
function `forward(params, x, training, key, state, weight) -> (probabilities,
new state)`, where `params` is the list of the model's trainable variables'
values in Keras' order and `state` its non-trainable ones' (batch
normalization's moving statistics), so the trained values go straight back
into the Keras model. Keras' own call cannot serve: it would pay for its
layers' bookkeeping inside every step, and its convolutions are XLA's, which
the CPU runs slowly for these small filters.

Each layer becomes one typed op through the op class registered for its
Keras class (layers.py, the one table of what is lowered; any other layer
raises Unsupported, so Keras trains the model instead); routes.py then sends
the ops that can to the hand-written CPU kernels. Image tensors flow in the
layout that is fastest on the device (layouts.py: Keras' NHWC, or CHWN for
im2col convolutions on a CPU). Dense layers always see (batch, features) in
Keras' feature order, so the Keras weights mean the same thing in both layouts.
"""

from collections.abc import Callable
from dataclasses import dataclass

from mnistlab.training.fastpath.layers import DropoutOp
from mnistlab.training.fastpath.layouts import LAYOUTS
from mnistlab.training.fastpath.registry import op_class_for, refuse_extras
from mnistlab.training.fastpath.routes import choose_kernels
from mnistlab.training.fastpath.unsupported import Unsupported
from mnistlab.training.fastpath.widths import Shared, share


@dataclass(frozen=True)
class Lowered:
    """A model's forward pass as a pure function, and the key that identifies its structure."""

    forward: Callable  # (params, x, training, key, state, weight, knobs) -> ((batch, classes) output, new state)
    signature: tuple  # hashable: equal signatures give interchangeable `apply`s
    layout: str
    n_dropout: int  # dropout layers: each gets its own random stream
    images: bool  # holds convolutions or pooling (large activations per sample)
    kernels: bool = False  # runs some layers through the hand-written CPU kernels
    ops: tuple = ()
    n_state: int = 0  # non-trainable variables the ops read and update
    shared: Shared | None = None  # widths.Shared: this model's padded shapes and knobs in a shared program

    def apply(self, params, x, training=False, key=None, state=(), knobs=None):
        """The output alone."""
        return self.forward(params, x, training, key, state, None, knobs)[0]


class Walk:
    """The lowering of a model's layers in progress, as each op class's from_layer sees it."""

    def __init__(self, model, rank):
        self.position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.state_position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        self.rank = rank  # of the activations so far: 1 (features) or 3 (images)
        self.ops = []

    def weights(self, layer, names):
        """Positions among the model's trainable variables of the layer's `names` variables."""
        try:
            return tuple(self.position[id(getattr(layer, name))] for name in names)
        except KeyError:
            raise Unsupported(f"layer {layer.name} has frozen or shared weights") from None

    def state(self, layer, names):
        """Positions among the model's non-trainable variables of the layer's `names` variables."""
        try:
            return tuple(self.state_position[id(getattr(layer, name))] for name in names)
        except KeyError:
            raise Unsupported(f"layer {layer.name} has shared moving statistics") from None

    def add(self, op):
        """Append `op`, or fold it into the op before where that computes both as one."""
        self.rank = op.rank_after(self.rank)
        fused = self.ops[-1].fuse(op) if self.ops else None
        if fused is None:
            self.ops.append(op)
        else:
            self.ops[-1] = fused


@dataclass
class Call:
    """One forward pass's inputs besides the activations, as every op's apply takes them; an op
    that updates the non-trainable variables (NormOp, in training) replaces `state`."""

    params: list
    state: object
    training: bool
    key: object
    weight: object
    layout: object  # layouts.Layout
    knobs: object = None  # a shared program's inputs (widths.py)


def layer_ops(model):
    """The model's layers as typed ops, and its structural signature; Unsupported for anything else."""
    input_shape = tuple(model.input_shape[1:])
    rank = len(input_shape)
    if rank not in (1, 3):
        raise Unsupported(f"input shape {input_shape}: expected (features,) or (height, width, channels)")
    walk, signature = Walk(model, rank), [("input", input_shape)]
    for layer in model.layers:
        op_class = op_class_for(layer)
        refuse_extras(layer, state=op_class.keeps_state)
        op, entry = op_class.from_layer(layer, walk)
        if op is not None:
            walk.add(op)
        signature.append(entry)
    return walk.ops, signature, sum(isinstance(op, DropoutOp) for op in walk.ops)


def lower(model, layout="nhwc", use_kernels=True, shared=False):
    """A Lowered for a built keras.Sequential, or Unsupported saying why not.

    use_kernels=False keeps every layer on XLA's route even where the
    hand-written kernels are built (for comparisons); shared: a program that models
    differing in widths and dropout rates share (widths.py)."""
    import keras

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if type(model) is not keras.Sequential:
        raise Unsupported(f"{type(model).__name__} is not a keras.Sequential")
    if not model.built:
        raise Unsupported("the model is not built")
    ops_, signature, n_dropout = layer_ops(model)
    ops_ = choose_kernels(ops_, model.trainable_variables, layout, use_kernels)
    sharing = share(ops_, signature, model.trainable_variables) if shared else None
    if sharing:
        ops_, signature, sharing = sharing
    tensors = LAYOUTS[layout]

    def forward(params, x, training=False, key=None, state=(), weight=None, knobs=None):
        call = Call(params, state, training, key, weight, tensors, knobs)
        if x.ndim == 4:
            x = tensors.enter(x)
        for op in ops_:
            x = op.apply(x, call)
        return x, call.state

    has_images = any(op.images for op in ops_)
    uses_kernels = any(op.on_kernels() for op in ops_)
    n_state = sum(op.n_state() for op in ops_)
    return Lowered(
        forward,
        tuple(signature) + ((layout, uses_kernels) if has_images else (uses_kernels,)),
        layout if has_images else "nhwc",
        n_dropout,
        has_images,
        uses_kernels,
        ops_,
        n_state,
        sharing,
    )
