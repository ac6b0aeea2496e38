"""Step 4 of the pipeline: loading a saved model and measuring it on test data."""
import os
import warnings
import zipfile

import mnistlab.backend  # noqa: F401
import keras
import numpy as np

from mnistlab.data import for_input, one_hot, shaped
from mnistlab.errors import MnistlabError

EVAL_BATCH = 1000  # evaluation needs no small batches; big ones are much faster


def model_path(path):
    """Accept a model file or a run folder holding model.keras."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.keras")
    return path


def load_model(path, safe_mode=True):
    """Load a .keras model; a missing, damaged or unsafe file gives one clear MnistlabError."""
    path = model_path(path)
    if not os.path.isfile(path):
        raise MnistlabError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise MnistlabError(f"{path}: not a Keras model file (expected a .keras archive)")
    try:
        with warnings.catch_warnings():
            # Keras warns when a model saved before training has no optimizer state: harmless here
            warnings.filterwarnings("ignore", message="Skipping variable loading", category=UserWarning)
            return keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as e:
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise MnistlabError(f"{path}: the model carries custom code, refused in safe mode; "
                                "load it with --unsafe only if you trust its source") from None
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None
    except Exception as e:  # keras raises many kinds for a damaged archive
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None


def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def prepare(model, x, scaled=True):
    """uint8 images shaped as `model` expects them, as float32 in [0, 1] (scaled=False: still uint8,
    which the training loop scales itself); float input passes through."""
    shape = tuple(model.input_shape[1:])
    if x.dtype != np.uint8:
        return np.asarray(x, dtype=np.float32).reshape((len(x),) + shape)
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise MnistlabError(f"images of shape {x.shape[1:]} do not fit a model expecting {shape}")
    return for_input(x, shape) if scaled else shaped(x, shape)


def evaluate(model, x, y, batch_size=EVAL_BATCH):
    """Test loss and accuracy of a compiled model on uint8 images `x` and integer labels `y`."""
    scores = model.evaluate(prepare(model, x), one_hot(y), batch_size=batch_size, verbose=0,
                            return_dict=True)
    return {"test_loss": float(scores["loss"]), "test_accuracy": float(scores["accuracy"])}
