"""What a report is made from: a run folder or a search folder, and its JSON files."""
import json
import os

from mnistlab.errors import MnistlabError


def folder_kind(folder):
    """'search' (results.json) or 'run' (config.json); anything else is a clear error."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise MnistlabError(f"{folder}: no such folder")
    if os.path.isfile(os.path.join(folder, "results.json")):
        return "search"
    if os.path.isfile(os.path.join(folder, "config.json")):
        return "run"
    raise MnistlabError(f"{folder}: neither a run folder (config.json, model.keras) "
                        "nor a search folder (results.json)")


def read_json(path, default=None):
    """A JSON file's content; `default` when it is absent, or an error when no default is given."""
    if not os.path.isfile(path):
        if default is None:
            raise MnistlabError(f"{path}: missing")
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise MnistlabError(f"{path}: cannot read it as JSON ({e})") from None
