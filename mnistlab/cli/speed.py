"""The command line's speed tricks, kept here so the rest of the CLI reads plainly.

- Overlapped start: importing Keras takes ~3 s of one core, while reading, unzipping and
  checking the MNIST files takes ~0.4 s more in calls that release the GIL (zlib, MD5), so
  `train` reads the dataset on a second thread meanwhile; and on a first run, compiling the
  CPU kernels takes ~6 s of a core, so `train` starts that first, in a process of its own
  (fastpath/kernels/build.py run as a script: importing it as a module would import Keras),
  and the fast path waits for it only when it lowers the model (docs/performance.md).
- Quick exit: commands that start no processes or servers may end, once their files are
  written and their output flushed, without the interpreter's finalization, which takes
  ~0.4 s after JAX and Keras have been loaded (module teardown, the XLA client's threads) and
  does nothing the user needs.
"""

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

QUICK_EXIT = {"train", "evaluate", "calibrate", "show", "report", "predict", "explain", "runs", "compare"}
KERNEL_BUILD = Path(__file__).resolve().parent.parent / "training" / "fastpath" / "kernels" / "build.py"
# The kernel libraries (kernels/build.py's GROUPS) each named model's fast path calls: its first dense
# layer on the pixels, or its convolutions. Written out, not derived, because deriving them would
# build the model, i.e. import Keras, which the build is started to overlap with. The resnet (a
# functional model) trains through Keras' fit. tests/training/test_first_run.py checks this table.
KERNELS_OF = {"dnn": ("dense",), "cnn": ("conv",), "convnet": ("conv",), "resnet": ()}


def train_overlapped(config, **kwargs):
    """mnistlab.training.train(config, ...), with the kernels compiling (where they are not built yet)
    and the dataset read while Keras is being imported."""
    from mnistlab.data import load_dataset

    helper = start_kernel_build(config)
    with ThreadPoolExecutor(1) as pool:
        data = pool.submit(load_dataset, config.dataset, config.data_dir, verify=config.verify_data)
        from mnistlab.training import train

        if helper is not None:
            from mnistlab.training.fastpath.kernels import build

            build.adopt(helper)
        return train(config, dataset=data.result(), **kwargs)


def start_kernel_build(config):
    """The process that compiles the CPU kernels if they are missing (else it ends in ~0.1 s of CPU),
    or None where this run will not use them: Keras' own fit, another Keras backend, JAX told to
    leave the CPU out. On a GPU the kernels are not used; the build is then a one-time waste. A
    command that ends first (an error, quick exit) leaves it to finish: the next run finds the library."""
    platforms = os.environ.get("JAX_PLATFORMS") or "cpu"
    if (
        config.engine == "keras"
        or os.environ.get("KERAS_BACKEND", "jax") != "jax"
        or "cpu" not in platforms.lower().split(",")
    ):
        return None
    groups = KERNELS_OF.get(config.model, ())
    if not groups:
        return None
    return subprocess.Popen(
        [sys.executable, str(KERNEL_BUILD), *groups], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )


def exit_now(command, code):
    """End the process with `code`: at once for the QUICK_EXIT commands, after flushing; else normally."""
    if command not in QUICK_EXIT:
        return code
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)
