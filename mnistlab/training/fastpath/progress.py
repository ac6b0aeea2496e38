"""The training progress display: Keras' bar in a terminal, tqdm's in a Jupyter notebook, one plain
line per epoch anywhere else (a file, a pipe, CI's log).

Keras' progress bar draws with ANSI escape codes, backspaces and carriage returns (on Linux and macOS
even into a file or a pipe), which a notebook cell shows as garbage or keeps as noise in the saved
file, and which fill a log with a bar per refresh. In a notebook kernel a tqdm bar takes its place:
a widget where ipywidgets is installed, plain text otherwise (tqdm.auto chooses), one bar per epoch
with the same loss and accuracy figures. Elsewhere, when stdout is no terminal, EpochLines prints
each epoch's figures once.

These are the engines' own display (both the fast path's and training.loop.fit's Keras fit), added
beside the caller's callbacks, never among them.
"""

import numbers
import sys
import time
import warnings

import keras


def in_notebook():
    """True inside a Jupyter kernel (notebook, JupyterLab, VS Code, Colab): its shell is running,
    not merely importable (a test runner may have imported ipykernel)."""
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    return zmqshell is not None and zmqshell.ZMQInteractiveShell.initialized()


def on_terminal():
    """True when stdout is a terminal, where Keras' bar redraws itself in place."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a stand-in without isatty, or a closed stream
        return False


def keras_bar_fits():
    """True where Keras' own bar shows well: a terminal, not a notebook."""
    return not in_notebook() and on_terminal()


def progress_logger(verbose):
    """The callback that shows progress for `verbose` (0: none)."""
    if not verbose:
        return None
    if in_notebook():
        return NotebookProgress()
    return keras.callbacks.ProgbarLogger() if on_terminal() else EpochLines()


class EpochLines(keras.callbacks.Callback):
    """One plain line per epoch on stdout, flushed at once so that a log shows it as it happens:
    epoch 3/10  loss 0.1234  accuracy 0.9612  val_loss 0.0912  val_accuracy 0.9723  4.1s"""

    FIRST = ("loss", "accuracy", "val_loss", "val_accuracy")  # in this order; any other figure after

    def __init__(self):
        super().__init__()
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - (self.start or time.perf_counter())
        logs = {k: v for k, v in (logs or {}).items() if isinstance(v, numbers.Real)}
        names = [k for k in self.FIRST if k in logs] + [k for k in logs if k not in self.FIRST]
        figures = "".join(f"  {name} {float(logs[name]):.4f}" for name in names)
        print(
            f"epoch {epoch + 1}/{(self.params or {}).get('epochs', epoch + 1)}{figures}  {seconds:.1f}s",
            file=sys.stdout,
            flush=True,
        )


class NotebookProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch, counting steps, with the running loss and accuracy."""

    def __init__(self):
        super().__init__()
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        with warnings.catch_warnings():
            # Without ipywidgets tqdm warns once and draws text: what we want, so no warning.
            from tqdm import TqdmWarning

            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm
        params = self.params or {}  # Keras' set_params has run
        epochs = params.get("epochs", 1)
        # As text, on stdout as Keras' bar (a notebook shows stderr on red); a widget ignores `file`.
        self.bar = tqdm(
            total=params.get("steps"),
            unit="step",
            leave=True,
            file=sys.stdout,
            desc=f"Epoch {epoch + 1}/{epochs}" if epochs > 1 else "Epoch",
        )

    def on_train_batch_end(self, batch, logs=None):
        self.move_to(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is None:
            return
        self.move_to(self.bar.total or self.bar.n, logs)
        self.bar.close()
        self.bar = None

    def move_to(self, step, logs):
        if self.bar is None:
            return
        if logs:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if isinstance(v, (int, float))}, refresh=False)
        self.bar.update(max(0, step - self.bar.n))
