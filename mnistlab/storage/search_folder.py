"""A search's folder (`mnistlab search`), and the one place that knows its files::

    search.json      the search's settings, written when it starts
    fits/<hash>.json one record per finished (parameter set, fold) fit
    results.json     the table, written when it finishes; its presence means "finished"
    results.csv
    scores.png       drawn by mnistlab.search.plots
    best.json        the best parameters and the refit model's test metrics
    best_model.keras
    report.html
    tensorboard/     with --tensorboard: one TensorBoard run per parameter set
    .lock            while a process writes the folder (storage.folder)

What a record's key is and what its content must hold is mnistlab.search.store's business.
"""

import json
import os

from mnistlab.errors import MnistlabError
from mnistlab.storage.files import read_bytes, read_json, write_bytes, write_json, write_text
from mnistlab.storage.folder import Folder, writes
from mnistlab.storage.model_file import save_model


class SearchFolder(Folder):
    """One search's folder (see the module's docstring for its files)."""

    KIND = "search folder"
    SETTINGS = "search.json"
    RESULTS = "results.json"
    RESULTS_CSV = "results.csv"
    BEST = "best.json"
    BEST_MODEL = "best_model.keras"
    SCORES = "scores.png"
    RECORDS = "fits"
    FINISHED = RESULTS

    @property
    def results_path(self):
        return self.file(self.RESULTS)

    @property
    def best_model_path(self):
        return self.file(self.BEST_MODEL)

    @property
    def scores_path(self):
        return self.file(self.SCORES)

    @property
    def records_dir(self):
        return self.file(self.RECORDS)

    @staticmethod
    def is_search(path):
        """A folder holding results.json (a finished search)."""
        return os.path.isfile(os.path.join(os.fspath(path), SearchFolder.RESULTS))

    # -- settings, results, best (each write atomic; an OSError names the folder)

    @writes
    def write_settings(self, settings):
        os.makedirs(self.path, exist_ok=True)
        write_json(self.file(self.SETTINGS), settings)

    def read_settings(self):
        """search.json's content, {} when it is absent; damaged: one clear MnistlabError."""
        return read_json(self.file(self.SETTINGS), {})

    def holds_settings(self, settings):
        """True when search.json exists, reads, and equals `settings` (a damaged one: False)."""
        try:
            with open(self.file(self.SETTINGS), encoding="utf-8") as f:
                return json.load(f) == settings
        except (OSError, ValueError):
            return False

    @writes
    def write_results(self, rows, csv_text):
        """results.csv (the table as text, made by search.results) and results.json, each atomically."""
        write_text(self.file(self.RESULTS_CSV), csv_text)
        write_json(self.results_path, rows)

    def read_results(self):
        """results.json's rows; a missing, damaged or empty table is one clear MnistlabError."""
        rows = read_json(self.results_path)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "params" in r for r in rows):
            raise MnistlabError(f"{self.results_path}: not a search's results table")
        if not rows:
            raise MnistlabError(f"{self.results_path}: the search has no results")
        return rows

    @writes
    def write_best(self, best):
        write_json(self.file(self.BEST), best)

    def read_best(self):
        return read_json(self.file(self.BEST), {})

    @writes
    def save_best_model(self, model):
        save_model(model, self.best_model_path)

    @writes
    def save_scores(self, png):
        write_bytes(self.scores_path, png, suffix=".png")

    def read_scores(self):
        """scores.png's bytes, or None."""
        return read_bytes(self.scores_path)

    # -- fit records (fits/<key>.json; search.store decides the key and checks the content)

    def record_path(self, key):
        return os.path.join(self.records_dir, key + ".json")

    def load_record(self, key):
        """Record `key` as JSON, or None when it is absent or unreadable."""
        try:
            with open(self.record_path(key), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @writes
    def save_record(self, key, record):
        os.makedirs(self.records_dir, exist_ok=True)
        write_json(self.record_path(key), record)

    def count_records(self):
        """The finished fits recorded (fits/*.json; nothing else in fits/ counts)."""
        try:
            return sum(name.endswith(".json") for name in os.listdir(self.records_dir))
        except FileNotFoundError:
            return 0
