"""A trained model as an ONNX file, for inference without Keras or JAX (onnxruntime and NumPy).

    export(model, path)   writes `path`, an ONNX graph of the model's inference pass

The graph's one input, "pixels", is float32 pixels scaled to [0, 1] (MNIST's 0-255 divided by 255,
light ink on dark) in the model's own input shape with a dynamic batch dimension: (n, 784) for the
dnn, (n, 28, 28, 1) for the image models (cnn, convnet, resnet). Its one output, "probabilities", is
(n, 10) float32 softmax probabilities, as the model gives them: a run folder's temperature (mnistlab
calibrate) is not applied, which changes no predicted class.

The converter is jax2onnx (the one Keras' own `model.export(format="onnx")` calls on the JAX
backend; no TensorFlow): it traces the model's stateless call in inference mode (dropout off, batch
normalization's moving statistics), the weights closed over as constants. One detour: jax2onnx
0.17 lowers Keras' max pooling (lax.reduce_window over all four axes) to a 4-D MaxPool that
onnxruntime refuses ("Unsupported pooling size"), so while tracing, Keras' JAX max_pool is routed
through flax.nnx.max_pool, which jax2onnx lowers to a 2-D MaxPool between two Transposes.

Needs the onnx extra: pip install "mnistlab[onnx]".
"""

import contextlib
import importlib
import os

from mnistlab.errors import MnistlabError
from mnistlab.storage import cannot_write, write_bytes

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
OPSET = 23  # jax2onnx's default; onnxruntime >= 1.23 runs it


def export(model, path):
    """Write Keras `model` to `path` as an ONNX file, atomically (a temporary file, then a rename).

    The input: float32 pixels in [0, 1], shaped as the model's input with a dynamic batch dimension
    ((n, 784) for the dnn, (n, 28, 28, 1) for cnn, convnet and resnet); the output: (n, 10) float32
    probabilities. Returns `path`."""
    proto = convert(model)
    path = os.fspath(path)
    try:
        write_bytes(path, proto.SerializeToString(), suffix=".onnx")
    except OSError as e:
        raise cannot_write(path, e, "the ONNX file") from None
    return path


def check_writable(path):
    """A clear error, before any work, where `path`'s folder is missing or not a folder."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise MnistlabError(f"cannot write the ONNX file {os.fspath(path)}: {folder} is not a folder")
    if os.path.isdir(path):
        raise MnistlabError(f"cannot write the ONNX file {os.fspath(path)}: it is a folder")


def convert(model):
    """The onnx.ModelProto of `model`'s inference pass (export's graph, in memory)."""
    to_onnx = _converter()
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise MnistlabError(f"cannot export a model whose input shape {shape} is not fixed past the batch")
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def probabilities(pixels):
        return model.stateless_call(trainable, non_trainable, pixels, training=False)[0]

    with _pooling_for_onnx():
        return to_onnx(
            probabilities,
            [("n", *shape)],
            model_name=model.name,
            opset=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )


def require_converter():
    """One clear MnistlabError, before any work, where the onnx extra (jax2onnx, onnx) is missing."""
    _converter()


def _converter():
    try:
        from jax2onnx import to_onnx
    except ImportError as e:
        raise MnistlabError(f'ONNX export needs jax2onnx and onnx ({e}): pip install "mnistlab[onnx]"') from None
    _load_plugins()
    return to_onnx


# The converter plugins our graphs need: JAX's primitives and flax's max_pool (_pooling_for_onnx).
PLUGIN_TREES = ("jax",)
PLUGIN_MODULES = ("flax.nnx.max_pool",)


def _load_plugins():
    """Import the plugins of PLUGIN_TREES and PLUGIN_MODULES, and mark jax2onnx's discovery done.

    On its first conversion jax2onnx imports every module under jax2onnx/plugins, its examples and
    equinox's among them, some of which compile JAX programs as they load: 7 of the 7.5 s an export
    of the cnn took (2-core AMD EPYC); these plugins load in 1 s. A jax2onnx whose discovery flag is
    not where 0.17 keeps it imports everything itself, as before."""
    from pathlib import Path

    from jax2onnx.plugins import plugin_system

    if getattr(plugin_system, "_already_imported_plugins", None) is not False:
        return
    root = Path(plugin_system.__file__).parent
    for tree in PLUGIN_TREES:
        for source in sorted((root / tree).rglob("*.py")):
            if source.name != "__init__.py":
                importlib.import_module(".".join(("jax2onnx.plugins", *source.relative_to(root).with_suffix("").parts)))
    for module in PLUGIN_MODULES:
        importlib.import_module(f"jax2onnx.plugins.{module}")
    plugin_system._already_imported_plugins = True


@contextlib.contextmanager
def _pooling_for_onnx():
    """Keras' JAX max_pool through flax.nnx.max_pool while tracing (see the module's docstring)."""
    import keras
    from flax import nnx

    jax_nn = importlib.import_module("keras.src.backend.jax.nn")  # where keras.ops.max_pool looks it up
    keras_max_pool = jax_nn.max_pool

    def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        channels_last = (data_format or keras.config.image_data_format()) == "channels_last"
        if not channels_last or padding.lower() not in ("valid", "same"):
            return keras_max_pool(inputs, pool_size, strides, padding, data_format)
        window = _spatial(pool_size, inputs.ndim - 2)
        step = window if strides is None else _spatial(strides, inputs.ndim - 2)
        return nnx.max_pool(inputs, window_shape=window, strides=step, padding=padding.upper())

    setattr(jax_nn, "max_pool", max_pool)  # noqa: B010  (a module attribute type checkers do not know)
    try:
        yield
    finally:
        setattr(jax_nn, "max_pool", keras_max_pool)  # noqa: B010


def _spatial(value, rank):
    """A pooling size or stride, an int or a sequence, as a tuple of `rank` ints."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank
