"""Storage: every file mnistlab writes, and the two folders it writes them into.

    files.py          atomic writes (temporary file, fsync, rename), JSON and byte reads, the
                      writability probe, and cannot_write: the one wording of a failed write
    model_file.py     .keras models: saved atomically, loaded with one clear error; the temperature
                      a loaded model's probabilities are calibrated with
    folder.py         what both folders share, and the lock that keeps a second writer out
    run_folder.py     RunFolder: a training run's files, its checkpoints
    search_folder.py  SearchFolder: a search's files, its fit records

Folders read and write plain data (dicts, lists, arrays, bytes); what those mean belongs to the
layers above (training, search, report). This package sits in the bottom layer with errors,
paths and backend: it imports mnistlab.errors, and mnistlab.backend (with Keras) only when a
model is saved or loaded or a run's config.json is written.
"""

import os

from mnistlab.errors import MnistlabError
from mnistlab.storage.files import (
    atomic_open,
    atomic_path,
    cannot_write,
    prepare,
    read_bytes,
    read_json,
    write_bytes,
    write_json,
    write_text,
)
from mnistlab.storage.folder import Folder
from mnistlab.storage.model_file import model_path, save_model, set_temperature, temperature_of
from mnistlab.storage.run_folder import CURVES, HISTORY_KEYS, CheckpointState, RunFolder, history_csv, load_model
from mnistlab.storage.search_folder import SearchFolder

__all__ = [
    "CURVES",
    "HISTORY_KEYS",
    "CheckpointState",
    "Folder",
    "RunFolder",
    "SearchFolder",
    "atomic_open",
    "atomic_path",
    "cannot_write",
    "folder_kind",
    "history_csv",
    "load_model",
    "model_path",
    "prepare",
    "read_bytes",
    "read_json",
    "save_model",
    "set_temperature",
    "temperature_of",
    "write_bytes",
    "write_json",
    "write_text",
]


def folder_kind(path):
    """'search' (results.json) or 'run' (config.json); anything else is a clear error."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MnistlabError(f"{path}: no such folder")
    if SearchFolder.is_search(path):
        return "search"
    if RunFolder.is_run(path):
        return "run"
    raise MnistlabError(f"{path}: neither a run folder (config.json, model.keras) nor a search folder (results.json)")
