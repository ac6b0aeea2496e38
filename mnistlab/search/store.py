"""The search folder's memory: one small JSON record per finished
(parameter set, fold) fit, written atomically the moment the fit finishes.

A record's file name is a hash of everything that decides its score: the full
training parameters, the fold, the cross-validation settings, a fingerprint of
the data, and the Keras backend and versions. A rerun with the same settings finds the
record and skips the fit; a rerun with a different grid, cv or data computes a
different name and never reads a record made for something else. The record
also repeats its own spec, checked on reading, so a damaged or foreign file is
ignored rather than trusted.
"""

import hashlib
import json

import numpy as np

from mnistlab.storage import SearchFolder

FORMAT = 1  # bump when a record's meaning changes, so old ones are not reused


def fingerprint(*arrays):
    """A short hash of arrays' dtypes, shapes and bytes: the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.data.cast("B"))  # its buffer (numpy's stubs give ndarray __buffer__ from Python 3.12 only)
    return digest.hexdigest()[:32]


def canonical(obj):
    """JSON's view of obj (tuples become lists, numpy scalars plain numbers), for comparing specs."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_plain))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fit_spec(params, fold, cv, data, backend):
    """Everything that decides one fit's score."""
    return canonical({"format": FORMAT, "params": params, "fold": fold, "cv": cv, "data": data, "backend": backend})


def spec_key(spec):
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


class RecordStore:
    """Finished fits of one search folder, keyed by their spec."""

    def __init__(self, out):
        self.search = out if isinstance(out, SearchFolder) else SearchFolder(out)
        self.folder = self.search.records_dir

    def load(self, spec):
        """The finished fit's result for `spec`, or None (absent, unreadable, or made for another spec)."""
        record = self.search.load_record(spec_key(spec))
        if not isinstance(record, dict) or record.get("spec") != spec or "result" not in record:
            return None
        return record["result"]

    def save(self, spec, result):
        self.search.save_record(spec_key(spec), {"spec": spec, "result": canonical(result)})

    def count(self):
        return self.search.count_records()
