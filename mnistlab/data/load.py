"""Finding, verifying and loading a dataset's four IDX files.

Search order: an explicit data_dir, $MNISTLAB_DATA, the user cache, the
system folder Debian's dataset packages use; then a download into the cache.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistlab.data import download as dl
from mnistlab.data import idx
from mnistlab.data.registry import FILES, get_spec
from mnistlab.errors import DataError
from mnistlab.paths import cache_dir

SYSTEM_DIR = Path("/usr/share/datasets")


@dataclass
class Dataset:
    """The raw uint8 arrays of one dataset, as its files hold them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    folder: str


def candidate_dirs(name, data_dir=None):
    """Folders that may hold dataset `name`, most specific first."""
    dirs = []
    if data_dir:
        dirs += [Path(data_dir) / name, Path(data_dir)]
    if os.environ.get("MNISTLAB_DATA"):
        dirs.append(Path(os.environ["MNISTLAB_DATA"]) / name)
    dirs += [cache_dir() / name, SYSTEM_DIR / name]
    return dirs


def file_in(folder, stem):
    for candidate in (folder / (stem + ".gz"), folder / stem):
        if candidate.is_file():
            return candidate
    return None


def find(name, data_dir=None):
    """The first folder holding all four files, as {stem: path}, or None."""
    for folder in candidate_dirs(name, data_dir):
        paths = {stem: path for stem in FILES if (path := file_in(folder, stem)) is not None}
        if len(paths) == len(FILES):
            return paths
    return None


def check(path, data, expected_md5):
    got = hashlib.md5(data).hexdigest()
    if got != expected_md5:
        raise DataError(
            f"{path}: checksum mismatch (MD5 of its content {got}, expected {expected_md5}); "
            "the file is damaged or is not the published one: replace it, or pass "
            "--no-verify to use your own files"
        )


def load_dataset(name="mnist", data_dir=None, download=True, verify=True):
    """Load dataset `name` ('mnist' or 'fashion-mnist') as a Dataset of uint8 arrays.

    verify=False accepts files that are not the published ones (your own data in IDX form).
    """
    spec = get_spec(name)
    paths = find(name, data_dir)
    if paths is None:
        target = cache_dir() / name
        if not download:
            raise DataError(missing_message(name, data_dir))
        try:
            dl.download(spec, target)
        except DataError as e:
            raise DataError(f"{e}. {missing_message(name, data_dir)}") from None
        paths = find(name, data_dir)
        if paths is None:  # downloaded, yet not where find() looks
            raise DataError(missing_message(name, data_dir))
    raw = {stem: idx.read_bytes(p) for stem, p in paths.items()}
    # parse all before verifying any, so a damaged file is named for what is wrong with it
    arrays = {stem: idx.parse(data, str(paths[stem])) for stem, data in raw.items()}
    if verify:
        for stem, data in raw.items():
            check(paths[stem], data, spec.md5[stem])
    x_train, y_train = arrays[FILES[0]], arrays[FILES[1]]
    x_test, y_test = arrays[FILES[2]], arrays[FILES[3]]
    check_pair(paths[FILES[0]], x_train, y_train)
    check_pair(paths[FILES[2]], x_test, y_test)
    return Dataset(name, x_train, y_train, x_test, y_test, spec.classes, str(paths[FILES[0]].parent))


def check_pair(path, x, y):
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: images {x.shape} and labels {y.shape} do not pair up")
    if y.size and y.max() > 9:
        raise DataError(f"{path}: labels must be 0-9, found {int(y.max())}")


def missing_message(name, data_dir):
    where = ", ".join(str(d) for d in candidate_dirs(name, data_dir))
    files = ", ".join(stem + ".gz" for stem in FILES)
    return (
        f"dataset {name!r} not found and could not be downloaded: put {files} in one of: {where} "
        f"(or set MNISTLAB_DATA to a folder holding {name}/)"
    )
