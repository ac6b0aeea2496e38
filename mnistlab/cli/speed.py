"""The command line's two speed tricks, kept here so the rest of the CLI reads plainly.

- Overlapped start: importing Keras takes ~3 s of one core, while reading, unzipping and
  checking the MNIST files takes ~0.4 s more in calls that release the GIL (zlib, MD5), so
  `train` reads the dataset on a second thread meanwhile.
- Quick exit: commands that start no processes or servers may end, once their files are
  written and their output flushed, without the interpreter's finalization, which takes
  ~0.4 s after JAX and Keras have been loaded (module teardown, the XLA client's threads) and
  does nothing the user needs.
"""
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

QUICK_EXIT = {"train", "evaluate", "show", "report", "predict"}


def train_overlapped(config, **kwargs):
    """mnistlab.training.train(config, ...), with the dataset read while Keras is being imported."""
    from mnistlab.data import load_dataset

    with ThreadPoolExecutor(1) as pool:
        data = pool.submit(load_dataset, config.dataset, config.data_dir, verify=config.verify_data)
        from mnistlab.training import train

        return train(config, dataset=data.result(), **kwargs)


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
