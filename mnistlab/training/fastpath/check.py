"""Whether the fast path trains a model exactly as Keras' fit would, and if not, why.

The fast path implements one objective: the compiled loss (per sample, averaged
over the batch) of a Sequential of plain layers, minimised by the compiled
optimizer, reporting loss and accuracy. Anything compile() or a layer can add
to that (regularization penalties, constraints, loss weights, other metrics,
loss scaling, other dtypes) it would silently ignore, so it
refuses the model instead and Keras' own fit trains it.
"""

import json

from mnistlab.training.fastpath.lowering import lower
from mnistlab.training.fastpath.unsupported import Unsupported

PLAIN_METRICS = (None, [], (), ["accuracy"], ["acc"], ("accuracy",), ("acc",))
REDUCTIONS = ("sum_over_batch_size", "mean")  # a per-sample mean over the batch, as the engine computes


def loss_function(model):
    """The compiled loss as a per-sample function (y_true, y_pred) -> losses, and a cache key for it;
    (None, None) when the model's loss is not one Keras can resolve."""
    import keras

    loss = model.loss
    if not isinstance(loss, keras.losses.Loss):
        try:
            loss = keras.losses.get(loss)
        except (ValueError, TypeError):
            return None, None
    if isinstance(loss, keras.losses.Loss):
        return loss.call, key_of(loss)
    if callable(loss):
        return loss, loss  # a function is its own key
    return None, None


def key_of(obj):
    """What fixes a Keras object's compiled behaviour: its class and settings."""
    try:
        return type(obj), json.dumps(obj.get_config(), sort_keys=True, default=str)
    except (TypeError, ValueError, NotImplementedError):
        return type(obj), id(obj)


def compile_reason(model):
    """Why what compile() set up is more than the fast path implements, or None."""
    import keras

    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        return "the model is not compiled"
    if loss_function(model)[0] is None:
        return f"loss {model.loss!r} is not a Keras loss"
    loss = model.loss if isinstance(model.loss, keras.losses.Loss) else None
    if loss is not None and getattr(loss, "reduction", None) not in REDUCTIONS:
        return f"loss reduction {loss.reduction!r} (only the mean over the batch is implemented)"
    compiled_loss = getattr(model, "_compile_loss", None)
    if compiled_loss is not None and getattr(compiled_loss, "_user_loss_weights", None) is not None:
        return "the model is compiled with loss_weights"
    metrics = getattr(model, "_compile_metrics", None)
    if metrics is not None:
        if getattr(metrics, "_user_weighted_metrics", None) not in PLAIN_METRICS:
            return "the model is compiled with weighted metrics"
        user = getattr(metrics, "_user_metrics", None)
        if user not in PLAIN_METRICS:
            return f"compiled metrics {user!r}: only 'accuracy' is computed"
    optimizer = model.optimizer
    if getattr(optimizer, "loss_scale_factor", None) is not None:
        return "the optimizer scales the loss (loss_scale_factor)"
    return None


def check(model):
    """None when the fast path can train `model` exactly as Keras' fit would, else the reason it cannot."""
    import keras

    if keras.backend.backend() != "jax":
        return f"the Keras backend is {keras.backend.backend()}, not jax"
    reason = compile_reason(model)
    if reason:
        return reason
    try:
        lowered = lower(model)
    except Unsupported as e:
        return e.reason
    # A safety net: the lowering updates every non-trainable weight (dropout's seed states are
    # non-trainable variables but not weights: the fast path draws its own masks).
    if len(model.non_trainable_weights) != lowered.n_state:
        return "the model has non-trainable weights its layers do not update"
    return None
