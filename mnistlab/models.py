"""Step 2 of the pipeline: the networks.

build_model("dnn") and build_model("cnn") give exactly the notebook's models, layer for layer.
"convnet" and "resnet" go beyond it: 3x3 convolutions with batch normalization, and a small
residual network. Each is a plain Keras model (saved as .keras, reloadable in stock Keras); sizes,
and dropout are parameters so a search can vary them. Each model's default sizes (SIZES) and its
own training recipe (RECIPES: augmentation, schedule, label smoothing, weight decay, what a run
uses where its config leaves a setting at None) are data in mnistlab.catalog.
"""

from mnistlab.backend import import_keras

import numpy as np

from mnistlab.catalog import SIZES
from mnistlab.data.registry import IMAGE_SHAPE, NUM_CLASSES
from mnistlab.errors import UsageError
from mnistlab.params import check, joined, shown


def dnn(hidden=SIZES["dnn"]["hidden"], dropout=0.5, num_classes=NUM_CLASSES):
    """Dense 400 relu, Dense 100 relu, Dropout 0.5, Dense 10 softmax."""
    keras = import_keras()
    layers = [keras.Input(shape=(IMAGE_SHAPE[0] * IMAGE_SHAPE[1],))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers += [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers, name="dnn")


def cnn(
    filters=SIZES["cnn"]["filters"], kernel_size=5, hidden=SIZES["cnn"]["hidden"], dropout=0.5, num_classes=NUM_CLASSES
):
    """Conv 10 5x5, MaxPool 2, Conv 20 5x5, Dropout, MaxPool 2, Flatten, Dense 320, Dropout, Dense 10."""
    keras = import_keras()
    k = (kernel_size, kernel_size)
    layers = [
        keras.Input(shape=IMAGE_SHAPE),
        keras.layers.Conv2D(filters[0], k, activation="relu"),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(filters[1], k, activation="relu"),
        keras.layers.Dropout(dropout),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
    ]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers += [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers, name="cnn")


def conv_bn(keras, filters, strides=1, relu=True):
    """A 3x3 convolution, batch normalization (which makes the convolution's bias redundant), ReLU."""
    layers = [
        keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
    ]
    return layers + [keras.layers.ReLU()] if relu else layers


def convnet(
    filters=SIZES["convnet"]["filters"], hidden=SIZES["convnet"]["hidden"], dropout=0.5, num_classes=NUM_CLASSES
):
    """A modern small CNN: per stage two 3x3 convolutions with batch norm, then 2x2 max pooling;
    Flatten, Dense 128 with batch norm, Dropout, Dense 10 softmax."""
    keras = import_keras()
    layers = [keras.Input(shape=IMAGE_SHAPE)]
    for width in filters:
        layers += conv_bn(keras, width) + conv_bn(keras, width) + [keras.layers.MaxPooling2D((2, 2))]
    layers.append(keras.layers.Flatten())
    for units in hidden:
        layers += [keras.layers.Dense(units, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU()]
    layers += [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers, name="convnet")


def resnet(filters=SIZES["resnet"]["filters"], hidden=SIZES["resnet"]["hidden"], dropout=0.5, num_classes=NUM_CLASSES):
    """A small residual network: a 3x3 stem, then per stage one residual block of two 3x3
    convolutions (stride 2 from the second stage on, with a 1x1 projection on the shortcut);
    global average pooling, Dropout, Dense 10 softmax."""
    keras = import_keras()
    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = inputs
    for layer in conv_bn(keras, filters[0]):
        x = layer(x)
    for stage, width in enumerate(filters):
        strides = 1 if stage == 0 else 2
        shortcut = x
        for layer in conv_bn(keras, width, strides) + conv_bn(keras, width, relu=False):
            x = layer(x)
        # a KerasTensor: pyright infers keras.Input as returning a list too
        if strides != 1 or shortcut.shape[-1] != width:  # pyright: ignore[reportAttributeAccessIssue]
            shortcut = keras.layers.Conv2D(width, 1, strides=strides, use_bias=False)(shortcut)
            shortcut = keras.layers.BatchNormalization()(shortcut)
        x = keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet")


def seeded(model, seed):
    """The same network with each random initializer and dropout layer given its own seed.

    Keras draws the seeds of unseeded layers from Python's global `random`, which
    other threads of the process may draw from too: a Dask worker's event loop
    does, every second or so. Then the same seed gives different initial
    weights. Explicit seeds, derived from `seed`, make each fit depend on its
    parameters alone, whichever process runs it.
    """
    config = model.get_config()
    slots = []

    def collect(node):
        if isinstance(node, dict):
            if "seed" in node and node["seed"] is None:
                slots.append(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(config)
    for node, value in zip(slots, np.random.SeedSequence(int(seed)).generate_state(len(slots))):
        node["seed"] = int(value) % 2**31
    return type(model).from_config(config)


MODELS = {"dnn": dnn, "cnn": cnn, "convnet": convnet, "resnet": resnet}


def build_model(name="dnn", hidden=None, dropout=0.5, filters=None, **kwargs):
    """A fresh, uncompiled model by name; `hidden` and `filters` None keep the model's sizes.
    Checked by mnistlab.params' table. (Augmentation is the training loop's: no layer of the model.)"""
    name, dropout = check("model", name), check("dropout", dropout)
    for size, value in (("hidden", hidden), ("filters", filters)):
        value = check(size, value)
        if value is not None:
            kwargs[size] = tuple(value)
    if name == "dnn" and "filters" in kwargs:
        convolutional = [model for model in MODELS if "filters" in SIZES[model]]
        raise UsageError(f"the dnn has no convolutions: filters applies to {joined(convolutional)}")
    if name == "cnn" and len(kwargs.get("filters", (0, 0))) != 2:
        raise UsageError(
            f"the cnn has two convolutions: give filters as two sizes, e.g. {shown(SIZES['cnn']['filters'])}"
        )
    return MODELS[name](dropout=dropout, **kwargs)
