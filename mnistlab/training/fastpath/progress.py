"""The training progress bar: Keras' own in a terminal, tqdm's in a Jupyter notebook.

Keras' progress bar draws with ANSI escape codes and backspaces, which a notebook cell
shows as garbage or keeps as noise in the saved file. In a notebook kernel a tqdm bar
takes its place: a widget where ipywidgets is installed, plain text otherwise (tqdm.auto
chooses), one bar per epoch with the same loss and accuracy figures.
"""
import sys
import warnings

import keras


def in_notebook():
    """True inside a Jupyter kernel (notebook, JupyterLab, VS Code, Colab): its shell is running,
    not merely importable (a test runner may have imported ipykernel)."""
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    return zmqshell is not None and zmqshell.ZMQInteractiveShell.initialized()


def progress_logger(verbose):
    """The callback that shows progress for `verbose` (0: none)."""
    if not verbose:
        return None
    return NotebookProgress() if in_notebook() else keras.callbacks.ProgbarLogger()


class NotebookProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch, counting steps, with the running loss and accuracy."""

    watch_only = True  # shows the logs, never touches the weights (see training.loop.train)

    def __init__(self):
        super().__init__()
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        with warnings.catch_warnings():
            # Without ipywidgets tqdm warns once and draws text: what we want, so no warning.
            from tqdm import TqdmWarning

            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm
        epochs = self.params.get("epochs", 1)
        # As text, on stdout as Keras' bar (a notebook shows stderr on red); a widget ignores `file`.
        self.bar = tqdm(total=self.params.get("steps"), unit="step", leave=True, file=sys.stdout,
                        desc=f"Epoch {epoch + 1}/{epochs}" if epochs > 1 else "Epoch")

    def on_train_batch_end(self, batch, logs=None):
        self.move_to(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.move_to(self.bar.total or self.bar.n, logs)
        self.bar.close()
        self.bar = None

    def move_to(self, step, logs):
        if self.bar is None:
            return
        if logs:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if isinstance(v, (int, float))},
                                 refresh=False)
        self.bar.update(max(0, step - self.bar.n))
