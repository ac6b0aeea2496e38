"""Step 2 of the pipeline: the notebook's two networks, layer for layer.

build_model("dnn") and build_model("cnn") give exactly the notebook's models;
sizes and dropout are parameters so a search can vary them.
"""
from mnistlab.backend import import_keras
from mnistlab.data.registry import IMAGE_SHAPE, NUM_CLASSES


def dnn(hidden=(400, 100), dropout=0.5, num_classes=NUM_CLASSES):
    """Dense 400 relu, Dense 100 relu, Dropout 0.5, Dense 10 softmax."""
    keras = import_keras()
    layers = [keras.Input(shape=(IMAGE_SHAPE[0] * IMAGE_SHAPE[1],))]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers += [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers, name="dnn")


def cnn(filters=(10, 20), kernel_size=5, hidden=(320,), dropout=0.5, num_classes=NUM_CLASSES):
    """Conv 10 5x5, MaxPool 2, Conv 20 5x5, Dropout, MaxPool 2, Flatten, Dense 320, Dropout, Dense 10."""
    keras = import_keras()
    k = (kernel_size, kernel_size)
    layers = [keras.Input(shape=IMAGE_SHAPE),
              keras.layers.Conv2D(filters[0], k, activation="relu"),
              keras.layers.MaxPooling2D((2, 2)),
              keras.layers.Conv2D(filters[1], k, activation="relu"),
              keras.layers.Dropout(dropout),
              keras.layers.MaxPooling2D((2, 2)),
              keras.layers.Flatten()]
    layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers += [keras.layers.Dropout(dropout), keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers, name="cnn")


MODELS = {"dnn": dnn, "cnn": cnn}


def build_model(name="dnn", hidden=None, dropout=0.5, **kwargs):
    """A fresh, uncompiled model by name; `hidden` None keeps the notebook's sizes.
    Name, sizes and dropout are checked by mnistlab.params' table."""
    from mnistlab.params import check

    name, hidden, dropout = check("model", name), check("hidden", hidden), check("dropout", dropout)
    if hidden is not None:
        kwargs["hidden"] = tuple(hidden)
    return MODELS[name](dropout=dropout, **kwargs)
