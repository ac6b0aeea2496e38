"""Choosing the Keras backend before Keras is first imported: JAX unless the
user's KERAS_BACKEND says otherwise."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")


def import_keras():
    """Keras, imported on first use so that light commands (--help) stay quick."""
    import keras

    return keras
