"""Keras model files (.keras): saved atomically, loaded with one clear error for each way
a file can be wrong. Keras is imported only when a model is saved or loaded."""

import os
import warnings
import weakref
import zipfile

from mnistlab.errors import MnistlabError, first_line
from mnistlab.storage.files import atomic_path

MODEL = "model.keras"  # a run folder's model (storage.run_folder names the rest of its files)

_TEMPERATURES = weakref.WeakKeyDictionary()  # model -> the temperature its run folder was calibrated with


def set_temperature(model, temperature):
    """Record that `model`'s probabilities are to be divided by `temperature` in log space
    (mnistlab.calibration): storage.load_model does it for a calibrated run folder's model,
    and inference.predict_proba applies it. None: no temperature."""
    if temperature is None:
        _TEMPERATURES.pop(model, None)
    else:
        _TEMPERATURES[model] = float(temperature)


def temperature_of(model):
    """The temperature set for `model`, or None."""
    return _TEMPERATURES.get(model)


def save_model(model, path):
    """model.save to `path`, atomically (a kill leaves the old file or none, never half a file)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def model_path(path):
    """Accept a model file or a run folder holding model.keras."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL)
    return path


def load_model(path, safe_mode=True):
    """Load a .keras model (or a run folder's); a missing, damaged or unsafe file gives one clear MnistlabError."""
    path = model_path(path)
    if not os.path.isfile(path):
        raise MnistlabError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise MnistlabError(f"{path}: not a Keras model file (expected a .keras archive)")
    import mnistlab.backend  # noqa: F401  (the backend is chosen before Keras is imported)

    import keras

    try:
        with warnings.catch_warnings():
            # Keras warns when a model saved before training has no optimizer state: harmless here
            warnings.filterwarnings("ignore", message="Skipping variable loading", category=UserWarning)
            return keras.saving.load_model(path, safe_mode=safe_mode)
    except ValueError as e:
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise MnistlabError(
                f"{path}: the model carries custom code, refused in safe mode; "
                "load it with --unsafe only if you trust its source"
            ) from None
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None
    except Exception as e:  # keras raises many kinds for a damaged archive
        raise MnistlabError(f"{path}: cannot load the model ({first_line(e)})") from None
