"""Choosing the Keras backend before Keras is first imported: JAX unless the
user's KERAS_BACKEND says otherwise."""

import os

from mnistlab.system import switched_off

os.environ.setdefault("KERAS_BACKEND", "jax")


def import_keras():
    """Keras, imported on first use so that light commands (--help) stay quick."""
    import keras

    return keras


def use_disk_cache():
    """Keep JAX's compiled programs in the user cache folder, so the next process skips compilation.

    That covers the fast path's programs (seconds per model), the served model's
    forward pass and the many small programs Keras compiles to initialise a
    model's weights (about 2 s for the notebook's DNN); call it before any model
    is built. MNISTLAB_XLA_CACHE=0 turns it off; a cache folder the user configured wins.
    """
    import jax

    # JAX's options are attributes its Config class does not declare (set up at import)
    if switched_off("MNISTLAB_XLA_CACHE") or jax.config.jax_compilation_cache_dir:  # pyright: ignore[reportAttributeAccessIssue]
        return
    from mnistlab.paths import cache_dir

    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
